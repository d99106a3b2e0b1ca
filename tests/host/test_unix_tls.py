"""MQTT over TLS from the real MicroPython Unix port (its ssl module, mbedTLS 3.6): a node
trusting only the CA in its config connects to mosquitto's TLS listener and sends telemetry; it
refuses a broker whose certificate another CA signed, one that has expired, or one made for
another name, says why in one log line, and goes on retrying (no crash, no reset loop). What
MicroPython's ssl checks and does not is in docs/firmware.md."""

import asyncio
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

NODE = "u-tls"
PASSWORD = "right-password-for-the-node"


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


def run_node(d: Path, broker, ca: bytes, seconds: float) -> unixsim.UnixNode:
    root = d / "node"
    write_config(root, NODE, "127.0.0.1", broker.tls.port, NODE, PASSWORD, interval=1, ca=ca)
    n = unixsim.UnixNode(NODE, root, unixsim.firmware_lib(d.parent), unixsim.find_micropython(),
                         unixsim.DEFAULT_HEAPSIZE)

    async def go():
        task = asyncio.create_task(n.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    return n


def test_unix_port_node_over_tls_trusts_only_its_ca_and_says_why_it_refuses(tmp_path):
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
            n = run_node(d, broker, ca_pem(trusted), 6)
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
