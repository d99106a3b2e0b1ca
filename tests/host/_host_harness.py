"""Helpers for host-port tests: a broker-side listener, a simulated node, waiting for conditions."""

import asyncio
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from polylink import proto
from polylink_host.sim import SimNode, write_config


class Listener:
    """A persistent-session subscriber on pl/v1/#, surviving broker restarts (like ingest)."""

    def __init__(self, broker):
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id="test-" + uuid.uuid4().hex[:8],
            clean_session=False,
        )
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.ready.set()
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect(broker.host, broker.port, 30)
        self.c.loop_start()
        if not self.ready.wait(10):
            raise AssertionError("test listener could not subscribe")

    def _on_connect(self, c, userdata, flags, rc, props):
        c.subscribe("pl/v1/#", qos=1)

    def _on_message(self, c, userdata, m):
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain)))

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()

    def frames(self, node: str, mtype: int | None = None) -> list[tuple]:
        with self.lock:
            raw = [p for t, p, _ in self.msgs if t == f"pl/v1/{node}/up"]
        out = [proto.decode(p) for p in raw]
        return [f for f in out if mtype is None or f[0] == mtype]

    def conn(self, node: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.msgs if t == f"pl/v1/{node}/conn"]

    def send(self, node: str, mtype: int, body: dict) -> None:
        buf = bytearray(64)
        n = proto.encode(buf, mtype, 1, body)
        self.c.publish(f"pl/v1/{node}/down", bytes(buf[:n]), qos=1).wait_for_publish(5)


def sim_node(tmp_path: Path, broker, name: str, **cfg) -> SimNode:
    root = tmp_path / name
    write_config(root, name, broker.host, broker.port, **cfg)
    return SimNode(name, root)


async def until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
