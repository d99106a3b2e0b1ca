"""OTA end to end: `fleet run` with its own mosquitto (per-node logins), releases built with
mpy-cross and signed, three host-port nodes that download over real HTTP from the fleet.

A good release reaches every node, each confirmed healthy on the new version; a release whose app
crash-loops (simulated: the host port cannot run .mpy, see polylink_host.sim.SimNode) rolls back
on the first node by itself and the rollout pauses before anyone else gets it.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from polylink.ota import slots
from polylink_host import sim
from services import READY, FleetRun, fleet_db, free_port
from test_end_to_end import Api, SimFleet, create_token, wait_until

from fleet.store import audit as audit_store
from fleet.store.migrate import open_db

IDS = ["ota-0", "ota-1", "ota-2"]
BROWSER = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = "/usr/bin/chromium"


def fleet_cli(data_dir: Path, *args) -> str:
    r = subprocess.run([sys.executable, "-m", "fleet.cli", *args],
                       env=dict(os.environ, DATA_DIR=str(data_dir)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"fleet {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


@pytest.fixture
def fleet(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fleet_cli(data, "keys", "create", "k1")  # before the nodes are registered: they trust k1
    run = FleetRun(data, free_port(), free_port())
    try:
        run.wait_for(READY, timeout=60)
        yield run
    finally:
        if run.proc.poll() is None:
            run.stop()


def test_rollout_updates_nodes_over_http_and_a_crashing_release_rolls_back(tmp_path, fleet,
                                                                           artifacts):
    data = tmp_path / "data"
    api = Api(f"http://127.0.0.1:{fleet.port}/api/v1", create_token(data))
    nodes_dir = tmp_path / "nodes"
    nodes = SimFleet(IDS, nodes_dir, "127.0.0.1", fleet.mqtt_port)
    for node in IDS:  # the configs provisioning would write: per-node login, trusted keys
        ident = json.loads(fleet_cli(data, "node", "add", node, "--board", "ESP32_GENERIC",
                                     "--json"))
        assert set(ident["ota"]["keys"]) == {"k1"}
        sim.write_config(nodes_dir / "sim" / node, node, "127.0.0.1", fleet.mqtt_port,
                         user=node, password=ident["mqtt"]["password"], interval=5,
                         status_interval=10,
                         ota=dict(ident["ota"], url=f"http://127.0.0.1:{fleet.port}", confirm=2))
    # Key rotation rides along: k2 is created after the nodes were flashed with k1 alone, 0.2.0 is
    # signed with k1 and carries {k1, k2}; once every node confirmed it, k1 can be retired and
    # 0.3.0 is signed with k2.
    fleet_cli(data, "keys", "create", "k2")
    fleet_cli(data, "release", "build", "0.2.0", "--key", "k1")
    refused = subprocess.run([sys.executable, "-m", "fleet.cli", "keys", "retire", "k1"],
                             env=dict(os.environ, DATA_DIR=str(data)), capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "3 node(s) trust no other key than k1" in refused.stdout \
        + refused.stderr, refused
    for n in nodes.nodes:
        n.crash_versions = {"0.3.0"}
    nodes.start()
    try:
        def all_on(version):
            listed = {n["id"]: n for n in api.get("/nodes")["nodes"]}
            return all(listed.get(i, {}).get("online") and
                       listed[i]["firmware_version"] == version for i in IDS)

        wait_until("3 nodes online on 0.1.0", lambda: all_on("0.1.0"), 30)

        status, r = api.call("POST", "/rollouts", {
            "release": "0.2.0", "target": {"nodes": IDS},
            "stages": [{"percent": 33, "soak": 0}, {"percent": 100, "soak": 0}]})
        assert status == 201, r
        good = r["id"]
        wait_until("rollout of 0.2.0 done",
                   lambda: api.get(f"/rollouts/{good}")["state"] == "done", 120, every=1)
        r = api.get(f"/rollouts/{good}")
        assert r["totals"] == {"succeeded": 3}, r
        assert all_on("0.2.0"), "the fleet's view: every node runs 0.2.0"
        for n in nodes.nodes:  # ... and so does each node's flash
            st = slots.read(str(n.root))
            assert (st["version"], st["trial"]) == ("0.2.0", 0), (n.id, st)
            assert (n.root / st["active"] / "polylink" / "node.mpy").exists()
        history = api.get(f"/nodes/{IDS[0]}/ota")["reports"]
        states = [h["state"] for h in history]
        for s in ("offered", "downloading", "verified", "rebooting", "confirmed"):
            assert s in states, states
        # Each node now trusts k2 as well, in its flash and in the fleet's view (its report).
        for n in nodes.nodes:
            keys = json.loads((n.root / "config.json").read_text())["ota"]["keys"]
            assert set(keys) == {"k1", "k2"}, (n.id, keys)
            assert api.get(f"/nodes/{n.id}/ota")["trusted_keys"] == ["k1", "k2"]
        fleet_cli(data, "keys", "retire", "k1")
        fleet_cli(data, "release", "build", "0.3.0")  # signed with k2, carries {k2}

        status, r = api.call("POST", "/rollouts", {
            "release": "0.3.0", "target": {"nodes": IDS}, "max_failures": 0.2,
            "stages": [{"percent": 33, "soak": 0}, {"percent": 100, "soak": 0}]})
        assert status == 201, r
        bad = r["id"]
        wait_until("the bad rollout pauses",
                   lambda: api.get(f"/rollouts/{bad}")["state"] == "paused", 120, every=1)
        r = api.get(f"/rollouts/{bad}")
        assert "crash loop" in r["reason"], r
        victim = next(n for n in r["nodes"] if n["state"] == "rolled_back")
        others = [n for n in r["nodes"] if n["node_id"] != victim["node_id"]]
        assert all(n["state"] == "pending" and n["offered_at"] is None for n in others), others
        wait_until("the rolled-back node reports 0.2.0 again", lambda: all_on("0.2.0"), 60)
        vnode = nodes.node(victim["node_id"])
        st = slots.read(str(vnode.root))
        assert (st["version"], st["trial"]) == ("0.2.0", 0), st
        # Each trial boot crashed; the boot after the last one allowed went back to 0.2.0.
        assert vnode.crashes == slots.MAX_TRIAL_BOOTS, vnode.crashes
        time.sleep(3)
        assert api.get(f"/rollouts/{bad}")["state"] == "paused"
        browse(data, fleet, bad, artifacts)
        assert api.get(f"/rollouts/{bad}")["state"] == "aborted"
        audit = [a["action"] for a in audit_store.audit_log(open_db(fleet_db(data)),
                                                       target=f"rollout:{bad}")]
        assert audit[0] == "rollout.abort" and "rollout.auto-pause" in audit, audit
    finally:
        nodes.stop()


def test_runtime_image_rollout_confirms_and_a_crashing_one_rolls_back_the_runtime(tmp_path,
                                                                                  fleet):
    """Boards with OTA partitions get a MicroPython runtime image too (esp32.Partition: on the
    host port the simulation in polylink_host.esp32sim, with the bootloader's rollback)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vectors"))
    from make_runtime_vectors import app_image

    data = tmp_path / "data"
    api = Api(f"http://127.0.0.1:{fleet.port}/api/v1", create_token(data))
    nodes_dir = tmp_path / "nodes"
    ids = ["rt-0", "rt-1"]
    nodes = SimFleet(ids, nodes_dir, "127.0.0.1", fleet.mqtt_port)
    for n in nodes.nodes:
        ident = json.loads(fleet_cli(data, "node", "add", n.id, "--board", "ESP32_GENERIC_OTA",
                                     "--json"))
        sim.write_config(n.root, n.id, "127.0.0.1", fleet.mqtt_port, user=n.id,
                         password=ident["mqtt"]["password"], interval=5, status_interval=10,
                         board=sim.sim_board("ESP32_GENERIC_OTA"),
                         ota=dict(ident["ota"], url=f"http://127.0.0.1:{fleet.port}", confirm=2))
        n.__init__(n.id, n.root)  # boots with the OTA board's partitions
    for version, mpy in (("0.2.0", "1.25.0"), ("0.3.0", "1.26.0")):
        rt = tmp_path / f"ESP32_GENERIC-OTA-v{mpy}.app-bin"
        rt.write_bytes(app_image("esp32", mpy, 200000))
        out = fleet_cli(data, "release", "build", version, "--board", "ESP32_GENERIC_OTA",
                        "--runtime", str(rt))
        assert f"MicroPython {mpy} runtime image" in out, out
    for n in nodes.nodes:
        n.crash_versions = {"0.3.0"}
    nodes.start()
    try:
        def on(version, which, mpy=None):
            listed = {n["id"]: n for n in api.get("/nodes")["nodes"]}
            return all(listed.get(i, {}).get("online") and
                       listed[i]["firmware_version"] == version and
                       (mpy is None or listed[i]["micropython_version"] == mpy) for i in which)

        # The boot STATUS names the MicroPython (field 10); the fleet shows it.
        wait_until("2 nodes online on 0.1.0, MicroPython 1.24.1",
                   lambda: on("0.1.0", ids, "1.24.1"), 30)
        assert all(n.hal.mpy_version() == (1, 24, 1) for n in nodes.nodes)
        status, r = api.call("POST", "/rollouts", {
            "release": "0.2.0", "target": {"nodes": ids}, "stages": [{"percent": 100,
                                                                      "soak": 0}]})
        assert status == 201, r
        rid = r["id"]
        wait_until("runtime rollout done",
                   lambda: api.get(f"/rollouts/{rid}")["state"] == "done", 180, every=1)
        done = api.get(f"/rollouts/{rid}")
        assert done["totals"] == {"succeeded": 2}
        # Counted only on the nodes' own word that they run the new app on the new runtime.
        assert all(n["micropython_version"] == "1.25.0" for n in done["nodes"]), done["nodes"]
        assert on("0.2.0", ids, "1.25.0"), "the fleet's view: both run 0.2.0 on 1.25.0"
        for n in nodes.nodes:  # ... and each node's flash: new runtime booted and confirmed
            fl = n.hal.flash()
            assert (fl.running, fl.state("ota_1")) == ("ota_1", 2), (n.id, fl.otadata())
            assert n.hal.mpy_version() == (1, 25, 0)
            assert slots.read(str(n.root))["trial"] == 0

        victim = nodes.nodes[0]
        status, r = api.call("POST", "/rollouts", {
            "release": "0.3.0", "target": {"nodes": [victim.id]},
            "stages": [{"percent": 100, "soak": 0}]})
        assert status == 201, r
        bad = r["id"]
        wait_until("the crashing runtime release rolls back", lambda: api.get(
            f"/rollouts/{bad}")["nodes"][0]["state"] == "rolled_back", 180, every=1)
        wait_until("the victim reports 0.2.0 on 1.25.0 again",
                   lambda: on("0.2.0", [victim.id], "1.25.0"), 60)
        fl = victim.hal.flash()
        # The first crash reset found ota_0 still pending verification: the bootloader went back.
        assert fl.running == "ota_1" and fl.state("ota_0") == 4, fl.otadata()
        assert victim.hal.mpy_version() == (1, 25, 0)
        st = slots.read(str(victim.root))
        assert (st["version"], st["trial"]) == ("0.2.0", 0), st
        states = [h["state"] for h in api.get(f"/nodes/{victim.id}/ota")["reports"]]
        assert states.count("rolled_back") == 1 and "downloading" in states, states
    finally:
        nodes.stop()


def browse(data: Path, fleet, rid: int, artifacts: Path) -> None:
    """An operator looks at the paused rollout in Chromium and aborts it (tests/browser)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `.ci/run` installs it (apt-get install chromium)")
    r = subprocess.run([sys.executable, "-m", "fleet.cli", "user", "add", "op", "--role",
                        "operator", "--password-stdin"], input="a-long-password\n",
                       env=dict(os.environ, DATA_DIR=str(data)), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["node", str(BROWSER / "ota_ui.mjs")], cwd=BROWSER, capture_output=True,
                       text=True, timeout=120,
                       env=dict(os.environ, BASE=f"http://127.0.0.1:{fleet.port}", USER="op",
                                PASSWORD="a-long-password", RID=str(rid),
                                ARTIFACTS=str(artifacts), CHROMIUM=CHROMIUM))
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert "crash loop" in seen["list"]
