"""What MicroPython's own `ssl` (mbedTLS, as on the ESP32) checks, on the real Unix port, through
the same open_connection the node's MQTT link and OTA downloads use (UnixHAL, with the CA loaded
by polylink/net/pem.py as the ESP32 HAL loads it): docs/firmware.md and docs/operations.md say
what it can and cannot check from these results.

Two levels. A probe (tls_probe.py: one connection, one line echoed) against CPython's `ssl` with
certificates `fleet tls` makes (fleet/tls/certs.py) shows what is accepted: the fleet's CA and the
right name (an address too), a bundle of roots, no CA at all (nothing checked), a pinned
self-signed certificate. A whole node on mosquitto's TLS listener shows what is refused (another
CA, expired, another name): it says why in one log line and goes on retrying (no crash, no reset
loop), and with the right CA it publishes.
"""

import asyncio
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from polylink_host import unixsim
from polylink_host.sim import write_config

from fleet.broker import auth as brokerauth
from fleet.tls import certs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from tls_helpers import ca_pem, past, tls_mosquitto, write_pair  # noqa: E402

pytestmark = pytest.mark.micropython
PROBE = Path(__file__).with_name("tls_probe.py")
NODE = "u-tls"
PASSWORD = "right-password-for-the-node"


class EchoServer:
    """TLS on 127.0.0.1 with one certificate chain; echoes a line to each client."""

    def __init__(self, chain_pem: Path, key_pem: Path):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(chain_pem), str(key_pem))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.errors: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    with self.context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(tls.recv(100))
                except (ssl.SSLError, OSError) as e:
                    self.errors.append(str(e))

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return unixsim.firmware_lib(tmp_path_factory.mktemp("mpy"))


@pytest.fixture(scope="module")
def ca():
    return certs.make_ca()


def serve(tmp_path, ca, names=("localhost",)) -> EchoServer:
    ca_cert, ca_key = ca
    cert, key = certs.make_server(ca_cert, ca_key, list(names))
    return EchoServer(*write_pair(tmp_path, cert, key, ca_cert))


def probe(lib, tmp_path, host, port, trusted: bytes | None) -> str:
    """What the node says after connecting to host:port trusting `trusted` (PEM) or nothing."""
    flash = tmp_path / "flash"
    flash.mkdir(exist_ok=True)
    if trusted is not None:
        (flash / "ca.pem").write_bytes(trusted)
    out = subprocess.run([unixsim.find_micropython(), str(PROBE), str(lib), str(flash), host,
                          str(port), "ca.pem" if trusted is not None else "-"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_fleet_ca_and_the_right_name_connect(lib, tmp_path, ca):
    server = serve(tmp_path, ca, names=("localhost", "127.0.0.1"))
    try:
        assert probe(lib, tmp_path, "localhost", server.port, ca_pem(ca[0])) == \
            "CONNECTED b'ping\\n'"
        # An address in the certificate's names is checked as a name too.
        assert probe(lib, tmp_path, "127.0.0.1", server.port,
                     ca_pem(ca[0])).startswith("CONNECTED")
        # A CA file of several roots (an operator's bundle): each is trusted.
        other, _ = certs.make_ca("Another root")
        assert probe(lib, tmp_path, "localhost", server.port,
                     ca_pem(other) + ca_pem(ca[0])).startswith("CONNECTED")
    finally:
        server.close()


def test_without_a_ca_nothing_is_checked(lib, tmp_path, ca):
    """CERT_NONE: why provisioning always writes the CA (docs/operations.md)."""
    server = serve(tmp_path, ca, names=("fleet.example.org",))
    try:
        assert probe(lib, tmp_path, "localhost", server.port, None).startswith("CONNECTED")
    finally:
        server.close()


def test_a_self_signed_server_certificate_as_the_ca_is_pinned(lib, tmp_path):
    """The pinning the docs describe: the server's own self-signed certificate as ca.pem."""
    from selfsigned import make_cert

    cert, key = make_cert(tmp_path / "pinned", name="localhost")
    other, _ = make_cert(tmp_path / "other", name="localhost")
    server = EchoServer(cert, key)
    try:
        assert probe(lib, tmp_path, "localhost", server.port, cert.read_bytes()).startswith(
            "CONNECTED")
        said = probe(lib, tmp_path, "localhost", server.port, other.read_bytes())
        assert said.startswith("REFUSED"), said
    finally:
        server.close()


class UpWatcher:
    """Counts the node's uplinks at the broker, logged in as the ingest service (plain listener
    on loopback, as `fleet run`'s ingest)."""

    def __init__(self, broker, broker_dir: Path):
        self.count = 0
        self.ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watch")
        self.c.username_pw_set(*brokerauth.service_login(broker_dir, "ingest"))
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"pl/v1/{NODE}/up", 1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.c.on_message = lambda c, u, m: setattr(self, "count", self.count + 1)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert self.ready.wait(10), "the watcher could not subscribe"

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def run_node(lib, d: Path, broker, ca: bytes, seconds: float) -> unixsim.UnixNode:
    root = d / "node"
    write_config(root, NODE, "127.0.0.1", broker.tls.port, NODE, PASSWORD, interval=1, ca=ca)
    n = unixsim.UnixNode(NODE, root, lib, unixsim.find_micropython(),
                         unixsim.DEFAULT_HEAPSIZE)

    async def go():
        task = asyncio.create_task(n.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    return n


def test_unix_port_node_over_tls_trusts_only_its_ca_and_says_why_it_refuses(lib, tmp_path):
    ca_cert, ca_key = certs.make_ca()
    cases = {
        "good": (certs.make_server(ca_cert, ca_key, ["localhost", "127.0.0.1"]), ca_cert, None),
        "wrong CA": (certs.make_server(ca_cert, ca_key, ["127.0.0.1"]), certs.make_ca()[0],
                     "is not correctly signed by the trusted CA"),
        "expired": (certs.make_server(ca_cert, ca_key, ["127.0.0.1"], days=10, now=past(30)),
                    ca_cert, "validity has expired"),
        "other name": (certs.make_server(ca_cert, ca_key, ["fleet.example.org"]), ca_cert,
                       "does not match with the expected CN"),
    }
    for case, ((cert, key), trusted, why) in cases.items():
        d = tmp_path / case.replace(" ", "-")
        certfile, keyfile = write_pair(d / "tls", cert, key, ca_cert)
        broker = tls_mosquitto(d / "broker", certfile, keyfile, {NODE: PASSWORD})
        watcher = UpWatcher(broker, d / "broker")
        try:
            n = run_node(lib, d, broker, ca_pem(trusted), 6)
        finally:
            watcher.close()
            broker.stop()
        log = "\n".join(n.output)
        # Never a crash: a refused certificate is a refused connection, retried, not a reset.
        assert n.crashes == 0 and n.watchdog_resets == 0, f"{case}:\n{log}"
        if why is None:
            assert watcher.count >= 3, f"{case}: {watcher.count} uplinks over TLS\n{log}"
            assert "polylink: mqtt" not in log, log
        else:
            assert watcher.count == 0, f"{case}: the node published through a broker it must refuse"
            # Once per reason, not per retry (link.py), and naming it.
            refusals = [line for line in n.output if line.startswith("polylink: mqtt")]
            assert len(refusals) == 1 and "OSError: TLS: The certificate " in refusals[0] \
                and why in refusals[0], \
                f"{case}: the log does not say {why!r} once:\n{log}"
