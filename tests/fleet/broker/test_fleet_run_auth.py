"""`make run` + `make sim` with logins enforced: the broker admits registered nodes only."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from polylink import claim as fw_claim
from polylink import config as fw_config
from polylink_host.sim import SimNode
from services import READY, fleet_db, free_port

from fleet.broker.server import mqtt_ready
from fleet.identity.claims import generic_config
from fleet.store import identity as identity_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db

BOARDS = Path(__file__).resolve().parents[3] / "boards"


def _connack(port: int, user: bytes | None = None) -> int:
    """Return code of a raw MQTT 3.1.1 CONNECT (optionally with a user name and no password)."""
    import socket

    cid = b"probe-x"
    flags = 0x02 | (0x80 if user else 0)
    payload = len(cid).to_bytes(2, "big") + cid
    if user:
        payload += len(user).to_bytes(2, "big") + user
    var = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x0a"
    body = var + payload
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        return s.recv(4)[3]


def test_fleet_run_enforces_logins_and_sim_nodes_get_their_own(fleet_run, tmp_path,
                                                                monkeypatch):
    claim_port = free_port()
    monkeypatch.setenv("CLAIM_PORT", str(claim_port))
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    assert f"claim listener on mqtt://127.0.0.1:{claim_port}" in run.output()
    port = run.mqtt_port
    assert mqtt_ready("127.0.0.1", port)
    assert _connack(port) == 5, "an anonymous client must be refused (not authorised)"
    assert _connack(port, b"sim-0000") == 5
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), MQTT_PORT=str(port))
    env.pop("MQTT_URL", None)
    sim = subprocess.run([sys.executable, "-m", "polylink_host.sim", "--nodes", "2",
                          "--interval", "1", "--duration", "6"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert sim.returncode == 0, sim.stderr
    assert "sim: 2 nodes, 2 connected" in sim.stdout, sim.stdout + sim.stderr
    db = open_db(fleet_db(tmp_path / "data"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(
            telemetry_store.count_readings(db, n) for n in ("sim-0000", "sim-0001")):
        time.sleep(0.2)
    assert all(telemetry_store.count_readings(db, n) for n in ("sim-0000", "sim-0001"))
    assert set(identity_store.active_mqtt_hashes(db)) == {"sim-0000", "sim-0001"}
    # The fleet's own downlink publisher logs in with its service account.
    cmd = subprocess.run([sys.executable, "-m", "fleet.cli", "command", "send", "sim-0000",
                          "identify"], env=env, capture_output=True, text=True, timeout=30)
    assert cmd.returncode == 0 and "sent to sim-0000" in cmd.stdout, cmd.stderr
    # A second sim run reuses the passwords kept in the nodes' flash (no re-registration).
    hashes = identity_store.active_mqtt_hashes(db)
    again = subprocess.run([sys.executable, "-m", "polylink_host.sim", "--nodes", "2",
                            "--interval", "1", "--duration", "3"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert "sim: 2 nodes, 2 connected" in again.stdout, again.stdout + again.stderr
    assert identity_store.active_mqtt_hashes(db) == hashes
    # Zero-touch: a claim token from the CLI, a board claiming through `fleet run`'s claim service.
    token = subprocess.run([sys.executable, "-m", "fleet.cli", "claim", "token", "--board",
                            "ESP32_GENERIC", "--auto-approve"], env=env, capture_output=True,
                           text=True, timeout=30)
    assert token.returncode == 0, token.stderr
    root = tmp_path / "claimer"
    root.mkdir()
    board = json.loads((BOARDS / "ESP32_GENERIC.json").read_text())
    (root / "board.json").write_text(json.dumps(board))
    (root / "config.json").write_text(json.dumps(
        generic_config(token.stdout.strip(), "127.0.0.1", claim_port, retry=1)))
    hal = SimNode("claimer", root).hal
    cfg = fw_config.load(str(root), default_node="claimer", board=board)
    # Generous: on a loaded machine one silent round (_WAIT_S) plus a broker reload can pass 30 s.
    node = asyncio.run(asyncio.wait_for(fw_claim.run(hal, cfg, str(root)), 120))
    assert node == f"pl-{hal.unique_id()}" and node in identity_store.active_mqtt_hashes(db)
    db.conn.close()
    assert run.stop() == 0
