"""The link layer on the host port: WiFi loss and return, and MQTT over TLS to a real mosquitto."""

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _host_harness import Listener, sim_node, until
from polylink import proto
from services import free_port

from fleet.broker.server import MosquittoBroker, current_user


def test_wifi_loss_queues_frames_sends_the_will_and_delivers_after_return(mosquitto, tmp_path):
    lst = Listener(mosquitto)

    async def scenario():
        sim = sim_node(tmp_path, mosquitto, "h-wifi", interval=1)
        task = asyncio.create_task(sim.run())
        await until(lambda: len(lst.frames("h-wifi", proto.TELEMETRY)) >= 2, 10, "telemetry")
        sim.hal.set_wifi(False)
        await until(lambda: b"0" in lst.conn("h-wifi"), 10, "the will after the radio went away")
        await until(lambda: sim.node.store.count >= 3, 10, "frames queued while offline")
        assert sim.node.link.down.is_set() and sim.hal.wifi_rssi() is None
        sim.hal.set_wifi(True)
        await until(
            lambda: sim.node.store.count == 0 and lst.conn("h-wifi")[-1] == b"1",
            30,
            "back online with the queue drained",
        )
        await asyncio.sleep(1.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sim

    sim = asyncio.run(scenario())
    lst.close()
    seqs = [f[1] for f in lst.frames("h-wifi")]
    assert sorted(set(seqs)) == list(range(sim.node.seq.next))
    assert sim.node.link.connects == 2


def _certs(d: Path) -> None:
    """A test CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (Debian: apt-get install openssl)")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=polylink-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )


def test_mqtt_over_tls_verifies_the_broker(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    _certs(certs)
    tls_port = free_port()

    def conf(port: int) -> str:
        # A plain listener for the fixture's readiness probe, then the TLS one the node uses.
        return (
            f"per_listener_settings false\nuser {current_user()}\nallow_anonymous true\n"
            f"persistence false\nlistener {port} 127.0.0.1\n"
            f"listener {tls_port} 127.0.0.1\ncafile {certs}/ca.pem\n"
            f"certfile {certs}/server.pem\nkeyfile {certs}/server.key\n"
        )

    port = free_port()
    broker = MosquittoBroker(port, tmp_path / "broker", config_text=conf(port)).start()
    try:

        class TLS:
            host, port = "127.0.0.1", tls_port

        async def scenario():
            good = sim_node(tmp_path, TLS, "h-tls", interval=1)
            bad = sim_node(tmp_path, TLS, "h-tls-bad", interval=1)
            for sim, ca in ((good, certs / "ca.pem"), (bad, certs / "server.pem")):
                shutil.copy(ca, sim.root / "ca.pem")  # the bad node trusts the wrong certificate
                cfg = (sim.root / "config.json").read_text()
                (sim.root / "config.json").write_text(
                    cfg.replace('"keepalive": 60', '"keepalive": 60, "tls": {"ca": "ca.pem"}')
                )
            tasks = [asyncio.create_task(s.run()) for s in (good, bad)]
            await until(
                lambda: good.node is not None and good.node.sent >= 2,
                15,
                "frames acknowledged over TLS",
            )
            await until(
                lambda: bad.node is not None and bad.node.link.failures >= 1,
                15,
                "the untrusted broker refused",
            )
            assert not bad.node.link.up.is_set() and bad.node.sent == 0
            assert "certificate" in bad.node.link.last_error.lower(), bad.node.link.last_error
            assert good.node.cfg.mqtt_tls == {"ca": "ca.pem"}
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        started = time.monotonic()
        asyncio.run(scenario())
        assert time.monotonic() - started < 60
    finally:
        broker.stop()
