"""The web UI in a real Chromium: a technician on a phone and an operator at a desk.

Real parts end to end: `fleet run` (mosquitto, ingest worker, waitress), a simulated node running
the real firmware on the host port, Debian's chromium driven by playwright-core (ui.mjs).
Screenshots land in test-artifacts/.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import READY, fleet_db

from fleet.store import audit as audit_store
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db
from fleet.web import auth

HERE = Path(__file__).resolve().parent
PASSWORD = "a-long-password"
CHROMIUM = "/usr/bin/chromium"


def test_technician_and_operator_in_chromium(fleet_run, tmp_path, artifacts):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it as root "
                    "(tests/system-packages)")
    if not (HERE / "node_modules" / "playwright-core").exists():
        pytest.fail("tests/browser/node_modules is missing; run `make setup`")
    for old in artifacts.glob("*.png"):  # screenshots of an earlier run must not count
        old.unlink()
    data = tmp_path / "data"
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    db = open_db(fleet_db(data))
    for name, role in (("tech", "technician"), ("op", "operator"), ("boss", "admin")):
        auth.create_user(db, name, PASSWORD, role)
    env = dict(os.environ, DATA_DIR=str(data), MQTT_PORT=str(run.mqtt_port))
    env.pop("MQTT_URL", None)
    sim = subprocess.Popen(
        [sys.executable, "-m", "polylink_host.sim", "--nodes", "3", "--interval", "2",
         "--status-interval", "10", "--duration", "240"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not telemetry_store.count_readings(db, "sim-0000"):
            time.sleep(0.2)
        assert telemetry_store.count_readings(db, "sim-0000"), "the simulated node never reported"
        browser = subprocess.run(
            [shutil.which("node") or "node", str(HERE / "ui.mjs")],
            env=dict(os.environ, BASE=f"http://127.0.0.1:{run.port}", PASSWORD=PASSWORD,
                     NODE="sim-0000", ARTIFACTS=str(artifacts), CHROMIUM=CHROMIUM),
            cwd=HERE, capture_output=True, text=True, timeout=240)
        assert browser.returncode == 0, browser.stdout + browser.stderr + run.output()
    finally:
        sim.terminate()
        sim.wait(30)
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    # What the browser saw is what the store holds.
    assert seen["live"]["before"] != seen["live"]["after"]
    command = command_store.get_command(db, "sim-0000", seen["command"]["cid"])
    assert command["cmd"] == "identify" and command["created_by"] == "tech"
    assert command["result_code"] == 0 and seen["command"]["result"].startswith("ok")
    place = node_store.node_place(db, "sim-0000")
    assert place == {"lat": 52.520008, "lon": 13.404954, "location": "Lamppost 12, Main St"}
    assert seen["mapDots"] == 1
    tagged = [n["id"] for n in node_store.list_nodes(db) if "route-7" in n["tags"]]
    assert len(tagged) == 2 and seen["tagged"] == 2
    actions = {(e["actor"], e["action"]) for e in audit_store.audit_log(db, limit=1000)}
    assert {("tech", "command"), ("tech", "node.place"), ("op", "bulk.tag")} <= actions
    assert seen["auditRows"] >= 3
    shots = sorted(p.name for p in artifacts.glob("*.png"))
    assert len(shots) == 9 and all((artifacts / s).stat().st_size > 5000 for s in shots), shots
