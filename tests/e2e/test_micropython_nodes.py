"""End to end on real MicroPython: nodes on the Unix port (one bounded-heap process each) beside a
CPython host-port node, against real mosquitto and `fleet run`: telemetry, STATUS, a command,
CONFIG, a reboot, a broker outage with every seq stored once.

Lean on purpose (CI time): three nodes, one fleet, one outage.
"""

import asyncio
import threading
import time

import pytest
from polylink_host import sim, unixsim
from test_end_to_end import Api, create_token, fleet, wait_until  # noqa: F401 - fleet: fixture

from fleet.store import telemetry as telemetry_store
from fleet.store.base import connect

pytestmark = pytest.mark.micropython


class MixedFleet:
    """Unix-port node processes and a CPython SimNode, supervised in one loop on a thread."""

    def __init__(self, tmp, host, port, mpy_ids, cpython_ids):
        binary = unixsim.find_micropython()
        lib = unixsim.firmware_lib(tmp)
        self.mpy = {}
        self.cpy = {}
        for node in mpy_ids + cpython_ids:
            root = tmp / "sim" / node
            sim.write_config(root, node, host, port, interval=1, status_interval=10)
            if node in mpy_ids:
                self.mpy[node] = unixsim.UnixNode(node, root, lib, binary,
                                                  unixsim.DEFAULT_HEAPSIZE)
            else:
                self.cpy[node] = sim.SimNode(node, root)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks = []

    def start(self):
        self.thread.start()
        for n in list(self.mpy.values()) + list(self.cpy.values()):
            self.tasks.append(asyncio.run_coroutine_threadsafe(n.run(), self.loop))
        return self

    def stop(self):
        for t in self.tasks:
            t.cancel()
        time.sleep(0.5)  # the supervisors reap their processes
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_micropython_nodes_beside_a_cpython_node_through_the_fleet(tmp_path, mosquitto, fleet):  # noqa: F811 - the imported fixture
    data_dir = tmp_path / "data"
    api = Api(f"http://127.0.0.1:{fleet.port}/api/v1", create_token(data_dir))
    mpy_ids, cpy_ids = ["mpy-0000", "mpy-0001"], ["cpy-0000"]
    ids = mpy_ids + cpy_ids
    nodes = MixedFleet(tmp_path / "nodes", mosquitto.host, mosquitto.port, mpy_ids,
                       cpy_ids).start()
    try:
        def all_online_with_telemetry():
            listed = {n["id"]: n for n in api.get("/nodes")["nodes"]}
            if not all(listed.get(i, {}).get("online") for i in ids):
                return None
            return all(api.get(f"/nodes/{i}/telemetry") for i in ids) and listed

        listed = wait_until("all nodes online with telemetry", all_online_with_telemetry, 40)
        # STATUS from real MicroPython names its interpreter; the CPython node reports a setting.
        node = wait_until("the MicroPython version in STATUS", lambda: (
            lambda n: n if n["micropython_version"] else None)(api.get(f"/nodes/{mpy_ids[0]}")),
            20)
        assert node["micropython_version"].startswith("1.") and node["lost"] == 0, node
        assert 0 < node["heap_free"] < unixsim.DEFAULT_HEAPSIZE, node
        assert listed[mpy_ids[1]]["reset_cause"] == 1

        def done(path):
            return wait_until(f"{path} done", lambda: (
                lambda c: c if c["state"] in ("done", "failed") else None)(api.get(path)), 30)

        # A command and a CONFIG to a MicroPython node, each answered by its RESULT.
        status, body = api.call("POST", f"/nodes/{mpy_ids[0]}/commands", {"command": "identify"})
        assert status == 202, body
        assert done(body["url"].removeprefix("/api/v1"))["state"] == "done"
        status, body = api.call("POST", f"/nodes/{mpy_ids[0]}/config", {"interval": 2})
        assert status == 202, body
        assert done(body["url"].removeprefix("/api/v1"))["state"] == "done"
        wait_until("the new interval in STATUS",
                   lambda: api.get(f"/nodes/{mpy_ids[0]}")["interval"] == 2, 30)

        # A reboot: the process restarts and its next STATUS says why.
        status, body = api.call("POST", f"/nodes/{mpy_ids[1]}/commands", {"command": "reboot"})
        assert status == 202, body
        assert done(body["url"].removeprefix("/api/v1"))["state"] == "done"
        rebooted = wait_until("the STATUS after the reboot", lambda: (
            lambda n: n if n["reset_cause"] == 5 else None)(api.get(f"/nodes/{mpy_ids[1]}")), 40)
        assert rebooted["boots"] == listed[mpy_ids[1]]["boots"] + 1, rebooted
        assert nodes.mpy[mpy_ids[1]].crashes == 0

        # The broker goes away for a while; the nodes queue in flash and deliver afterwards.
        db = connect(data_dir / "fleet.db")
        try:
            before = {n: max(telemetry_store.frame_seqs(db, n)) for n in ids}
            mosquitto.stop()
            time.sleep(4)
            mosquitto.start()
            wait_until("frames sampled during the outage stored", lambda: all(
                max(telemetry_store.frame_seqs(db, n)) >= before[n] + 6 for n in ids), 60)
            for n in ids:
                stored = telemetry_store.frame_seqs(db, n)
                assert len(stored) == len(set(stored)), f"{n}: a seq is stored twice"
                # Frames go out in order from the flash queue, and no boot (which starts a new
                # block of seqs) happened since: every seq after the outage's start is stored.
                after = sorted(s for s in stored if s > before[n])
                assert after == list(range(before[n] + 1, after[-1] + 1)), f"{n}: {after}"
        finally:
            db.conn.close()
        for n in nodes.mpy.values():
            assert n.crashes == 0 and n.watchdog_resets == 0, "\n".join(n.output)
    finally:
        nodes.stop()
