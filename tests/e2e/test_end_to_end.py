"""End to end: real mosquitto, `fleet run` (web + ingest worker), 20 real firmware nodes simulated.

The nodes run in this process (the host port's SimNode, one asyncio loop in a thread) so the test
can see which frames each node had acknowledged by the broker; the fleet runs as a user starts it.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from polylink import proto
from polylink.net import link as link_module
from polylink_host import sim
from services import READY, FleetRun, fleet_db, free_port

from fleet.store import telemetry as telemetry_store
from fleet.store.base import connect

NODES = 20
INTERVAL_S = 1  # the firmware's minimum sampling interval: the most readings per second of test


class Sent:
    """What each simulated node handed to the broker, seen at the firmware's own publish call."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempted: dict[str, dict[int, int]] = defaultdict(dict)  # node -> seq -> readings
        self.acked: dict[str, dict[int, float]] = defaultdict(dict)  # node -> seq -> when

    def install(self, monkeypatch) -> None:
        original = link_module.Link.publish
        sent = self

        async def publish(self, topic, msg, retain=False, key=None):
            name = topic.decode() if isinstance(topic, (bytes, bytearray)) else topic
            if not name.endswith("/up"):
                return await original(self, topic, msg, retain, key)
            node = name.split("/")[2]
            mtype, seq, _ts, body = proto.decode(bytes(msg))
            with sent.lock:
                sent.attempted[node][seq] = len(body) if mtype == proto.TELEMETRY else 0
            result = await original(self, topic, msg, retain, key)
            with sent.lock:
                sent.acked[node][seq] = time.monotonic()
            return result

        monkeypatch.setattr(link_module.Link, "publish", publish)

    def snapshot(self) -> tuple[dict[str, dict[int, int]], dict[str, set[int]]]:
        with self.lock:
            return ({n: dict(s) for n, s in self.attempted.items()},
                    {n: set(s) for n, s in self.acked.items()})

    def acked_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for seqs in self.acked.values() for t in seqs.values()
                       if start <= t <= end)


class SimFleet:
    """Real firmware nodes (polylink_host.sim.SimNode) in one asyncio loop on a thread."""

    def __init__(self, ids: list[str], data_dir: Path, host: str, port: int):
        self.nodes = []
        for node in ids:
            root = data_dir / "sim" / node
            sim.write_config(root, node, host, port, interval=INTERVAL_S, status_interval=10)
            self.nodes.append(sim.SimNode(node, root))
        self.loop = asyncio.new_event_loop()
        self.main: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, name="sim-nodes", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def everything():
            tasks = [asyncio.create_task(n.run()) for n in self.nodes]
            tasks.append(asyncio.create_task(sim.watchdog(self.nodes)))
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        self.main = self.loop.create_task(everything())
        try:
            self.loop.run_until_complete(self.main)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def start(self) -> "SimFleet":
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.main is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.main.cancel)
        self.thread.join(20)

    def node(self, node_id: str):
        return next(n for n in self.nodes if n.id == node_id)


class Api:
    """The fleet's REST API with a bearer token."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str):
        status, body = self.call("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body


def wait_until(what: str, check, timeout: float, every: float = 0.25):
    """Poll check() until it returns something truthy; fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s (last: {last!r})")


def create_token(data_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "token", "create", "e2e", "--role", "operator"],
        env=dict(os.environ, DATA_DIR=str(data_dir)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def fleet(tmp_path, mosquitto):
    run = FleetRun(tmp_path / "data", free_port(), free_port(), mqtt_url=mosquitto.url)
    try:
        run.wait_for(READY, timeout=60)
        yield run
    finally:
        if run.proc.poll() is None:
            run.stop()


def test_twenty_nodes_commands_and_restarts_lose_no_reading(tmp_path, mosquitto, fleet,
                                                            monkeypatch):
    data_dir = tmp_path / "data"
    api = Api(f"http://127.0.0.1:{fleet.port}/api/v1", create_token(data_dir))
    ids = sim.node_ids("e2e", NODES)
    sent = Sent()
    sent.install(monkeypatch)
    nodes = SimFleet(ids, tmp_path / "nodes", mosquitto.host, mosquitto.port).start()
    try:
        # 1. All 20 online with telemetry in the API within 30 s of power-on.
        started = time.monotonic()

        def all_online_with_telemetry():
            listed = {n["id"]: n for n in api.get("/nodes")["nodes"]}
            if not all(listed.get(i, {}).get("online") for i in ids):
                return None
            return all(api.get(f"/nodes/{i}/telemetry") for i in ids)

        wait_until("all 20 nodes online with telemetry", all_online_with_telemetry, 30)
        assert time.monotonic() - started <= 30
        pack = api.get(f"/nodes/{ids[0]}/telemetry")
        assert ids[0] in pack[0]["bn"], pack[0]
        units = {record.get("u") for record in pack}
        assert {"Cel", "%RH", "V"} <= units, f"expected temperature, humidity, battery: {pack[:4]}"

        # 2. A command through the API reaches its node and its result comes back.
        target = nodes.node(ids[3])
        toggles = target.hal.led_toggles
        status, body = api.call("POST", f"/nodes/{ids[3]}/commands", {"command": "identify"})
        assert status == 202, body
        command_path = body["url"].removeprefix("/api/v1")
        done = wait_until("the identify result", lambda: (
            lambda c: c if c["state"] in ("done", "failed") else None)(api.get(command_path)), 20)
        assert done["state"] == "done", done
        assert target.hal.led_toggles > toggles, "the node never blinked its LED"

        # 3. The broker restarts while the nodes keep sampling.
        time.sleep(2)
        mosquitto.stop()
        time.sleep(3)
        mosquitto.start()
        time.sleep(5)

        # 4. The ingest worker dies (SIGKILL: no chance to finish its batch) and is restarted.
        pid = fleet.ingest_pid()
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        fleet.wait_for("ingest worker restarted", timeout=30)
        restarted_at = time.monotonic()
        assert sent.acked_between(killed_at, restarted_at) > 0, \
            "no frame was sent while the worker was down, so the restart proved nothing"
        time.sleep(5)
    finally:
        nodes.stop()

    # 5. Every seq a node had acknowledged is stored exactly once.
    attempted, acked = sent.snapshot()
    assert set(acked) == set(ids)
    db = connect(fleet_db(data_dir))
    try:
        def all_acked_stored():
            return all(acked[n] <= set(telemetry_store.frame_seqs(db, n)) for n in ids)

        wait_until("every acknowledged frame in the database", all_acked_stored, 30)
        for node in ids:
            stored = telemetry_store.frame_seqs(db, node)
            assert len(stored) == len(set(stored)), f"{node}: a seq is stored twice"
            extra = set(stored) - acked[node]
            assert extra <= set(attempted[node]), f"{node}: stored seqs never sent: {extra}"
            # At most the one frame in flight when the nodes were stopped: stored, never acked.
            assert len(extra) <= 1, f"{node}: {len(extra)} stored frames were never acknowledged"
            expected = sum(attempted[node][s] for s in stored)
            assert telemetry_store.count_readings(db, node) == expected, \
                f"{node}: readings duplicated or lost"
    finally:
        db.conn.close()
