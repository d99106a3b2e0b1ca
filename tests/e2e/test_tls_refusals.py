"""A node over TLS refuses a broker it must not trust, and says why in its log; the broker's TLS
listener refuses a client without a valid login.

Real mosquitto with the project's config and its TLS listener; the real firmware on the host port
(CPython `ssl`, which checks chain, dates and name as mbedTLS does on the ESP32).
"""

import asyncio
import ssl

import paho.mqtt.client as paho
import pytest
from polylink_host import sim
from tls_helpers import ca_pem, past, tls_mosquitto, write_pair

from fleet.tls import certs

NODE = "tls-node"
PASSWORD = "right-password-for-the-node"


def run_node(tmp_path, broker, ca: bytes, host: str = "127.0.0.1", seconds: float = 4.0):
    """Boot one simulated node against the broker's TLS listener; return its Link."""
    root = tmp_path / "node"
    sim.write_config(root, NODE, host, broker.tls.port, NODE, PASSWORD, interval=1, ca=ca)
    node = sim.SimNode(NODE, root)

    async def go():
        task = asyncio.create_task(node.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    return node.node.link


@pytest.fixture
def ca():
    return certs.make_ca()


def test_node_connects_with_its_ca_and_refuses_wrong_ca_expired_or_other_name(
        tmp_path, ca, capsys):
    ca_cert, ca_key = ca
    cases = {
        "good": (certs.make_server(ca_cert, ca_key, ["localhost", "127.0.0.1"]), ca_cert, None),
        "wrong CA": (certs.make_server(ca_cert, ca_key, ["127.0.0.1"]), certs.make_ca()[0],
                     "self-signed certificate in certificate chain"),
        "expired": (certs.make_server(ca_cert, ca_key, ["127.0.0.1"], days=10, now=past(30)),
                    ca_cert, "certificate has expired"),
        "other name": (certs.make_server(ca_cert, ca_key, ["fleet.example.org"]), ca_cert,
                       "IP address mismatch"),
    }
    for case, ((cert, key), trusted, why) in cases.items():
        d = tmp_path / case.replace(" ", "-")
        certfile, keyfile = write_pair(d / "tls", cert, key, ca_cert)
        broker = tls_mosquitto(d / "broker", certfile, keyfile, {NODE: PASSWORD})
        try:
            capsys.readouterr()
            link = run_node(d, broker, ca_pem(trusted))
            log = capsys.readouterr().out
        finally:
            broker.stop()
        if why is None:
            assert link.connects >= 1, f"{case}: the node never connected: {link.last_error}"
            assert "polylink: mqtt" not in log, log
        else:
            assert link.connects == 0, f"{case}: the node connected to a broker it must refuse"
            assert why in log, f"{case}: the node's log does not say {why!r}:\n{log}"
            assert "CERTIFICATE_VERIFY_FAILED" in link.last_error, link.last_error


def test_tls_listener_refuses_clients_without_a_valid_login(tmp_path, ca):
    ca_cert, ca_key = ca
    certfile, keyfile = write_pair(tmp_path / "tls", *certs.make_server(
        ca_cert, ca_key, ["127.0.0.1"]), ca_cert)
    broker = tls_mosquitto(tmp_path / "broker", certfile, keyfile, {NODE: PASSWORD})
    (tmp_path / "ca.pem").write_bytes(ca_pem(ca_cert))
    try:
        results = {}
        for case, login in {"right": (NODE, PASSWORD), "wrong password": (NODE, "guess"),
                            "no login": None, "unknown user": ("someone", PASSWORD)}.items():
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{len(results)}")
            client.tls_set(ca_certs=str(tmp_path / "ca.pem"), cert_reqs=ssl.CERT_REQUIRED)
            if login:
                client.username_pw_set(*login)
            got = []
            client.on_connect = lambda c, u, f, rc, p, got=got: got.append(rc)
            client.connect("127.0.0.1", broker.tls.port)
            for _ in range(50):
                client.loop(0.1)
                if got:
                    break
            client.disconnect()
            results[case] = got[0].is_failure if got else "no answer"
        assert results == {"right": False, "wrong password": True, "no login": True,
                           "unknown user": True}, results
        # Plain MQTT on the TLS port is no way around it: the listener speaks TLS only.
        plain = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="plain")
        plain.username_pw_set(NODE, PASSWORD)
        got = []
        plain.on_connect = lambda c, u, f, rc, p: got.append(rc)
        try:
            plain.connect("127.0.0.1", broker.tls.port)
            for _ in range(30):
                plain.loop(0.1)
        except OSError:
            pass
        assert not got or got[0].is_failure, "a plain MQTT client got in on the TLS listener"
    finally:
        broker.stop()


@pytest.mark.micropython
def test_a_node_on_real_micropython_logs_in_over_tls(tmp_path, ca):
    """The firmware on the MicroPython Unix port (its own ssl: mbedTLS, as on the ESP32) logs in
    on mosquitto's TLS listener with the CA file provisioning writes."""
    from polylink_host import unixsim

    ca_cert, ca_key = ca
    certfile, keyfile = write_pair(tmp_path / "tls", *certs.make_server(
        ca_cert, ca_key, ["localhost"]), ca_cert)
    broker = tls_mosquitto(tmp_path / "broker", certfile, keyfile, {NODE: PASSWORD})
    root = tmp_path / "node"
    sim.write_config(root, NODE, "localhost", broker.tls.port, NODE, PASSWORD, interval=1,
                     ca=ca_pem(ca_cert))
    node = unixsim.UnixNode(NODE, root, unixsim.firmware_lib(tmp_path),
                            unixsim.find_micropython(), unixsim.DEFAULT_HEAPSIZE, "")
    log = tmp_path / "broker" / "mosquitto.log"

    async def go():
        task = asyncio.create_task(node.run())
        try:
            for _ in range(150):
                if f"as {NODE} " in log.read_text():
                    return
                await asyncio.sleep(0.2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(go())
    finally:
        broker.stop()
    text = log.read_text()
    assert f"on port {broker.tls.port}." in text, text
    assert f"as {NODE} " in text and f"u'{NODE}'" in text, "\n".join(node.output)
