"""Setting up another supplier's device from a 360 px phone, in a real Chromium against a real
`fleet run`: paste a codec and a captured payload, see the readings before saving, save, then
register a device by its TR005 QR text typed in (the camera scan: test_qr_scan_browser.py)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from services import READY, fleet_db

from fleet.store import audit as audit_store
from fleet.store.migrate import open_db
from fleet.web import auth

HERE = Path(__file__).resolve().parent
CODEC = HERE.parent / "fleet" / "profiles" / "codecs" / "vendor_weather.js"
PASSWORD = "a-long-password"
CHROMIUM = "/usr/bin/chromium"


def test_technician_sets_up_a_device_type_on_a_phone(fleet_run, tmp_path, artifacts):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it as root "
                    "(tests/system-packages)")
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    db = open_db(fleet_db(tmp_path / "data"))
    auth.create_user(db, "tech", PASSWORD, "technician")
    browser = subprocess.run(
        [shutil.which("node") or "node", str(HERE / "device_setup.mjs")],
        env=dict(os.environ, BASE=f"http://127.0.0.1:{run.port}", USER="tech",
                 PASSWORD=PASSWORD, CODEC=CODEC.read_text(), ARTIFACTS=str(artifacts),
                 CHROMIUM=CHROMIUM),
        cwd=HERE, capture_output=True, text=True, timeout=180)
    assert browser.returncode == 0, browser.stdout + browser.stderr + run.output()
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    assert "temperature: 22.3333 Cel" in seen["tried"]
    assert "pressure: 101330 Pa" in seen["tried"] and "battery_voltage: 4.28 V" in seen["tried"]
    assert "payload too short: 6 bytes, need 7" in seen["tried"]  # the second, cut-off paste
    assert not seen["listedBeforeSave"] and seen["listedAfterSave"]
    assert seen["triedWidth"] <= 360 and seen["devicesWidth"] <= 360
    # The scan button wherever the browser has a camera API: with BarcodeDetector's QR reader or,
    # as in Debian's Chromium, jsQR (the scan itself: test_qr_scan_browser.py); typed here.
    assert seen["scanButtonShown"]
    assert seen["flash"] == ["Device 70b3d57ed0001002 registered."]
    node = next(db.query("SELECT * FROM nodes WHERE id = ?", ["70b3d57ed0001002"]))
    assert (node["profile"], node["name"], node["lat"], node["interval"]) == (
        "acme-wx2", "Roof of the town hall", 52.3702, 600)
    assert [e["actor"] for e in audit_store.audit_log(db, target="acme-wx2")] == ["tech"]
