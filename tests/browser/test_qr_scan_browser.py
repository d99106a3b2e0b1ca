"""Registering a device by scanning its QR label with the camera, in a real Chromium whose fake
camera shows a QR code made here (segno): a LoRa Alliance TR005 code and a DevEUI-only one.
Chromium on Linux has no BarcodeDetector for QR, so this exercises the jsQR path the page loads
from fleet/static/vendor (npm, pinned); the server parses what the scan put in the form."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import segno
from services import READY, fleet_db

from fleet.profiles import service
from fleet.store import audit as audit_store
from fleet.store import nodes as node_store
from fleet.store.migrate import open_db
from fleet.web import auth

HERE = Path(__file__).resolve().parent
PASSWORD = "a-long-password"
CHROMIUM = "/usr/bin/chromium"
W, H = 640, 480  # the fake camera's frame; 4:2:0 needs even sides
SCALE, QUIET = 8, 4  # px per module and modules of white border, as a printed label has
TR005 = "LW:D0:70B3D57ED0000000:70B3D57ED0001003:AC3E0002:SSN-0042"
DEVEUI_ONLY = "70B3D57ED0001004"


def qr_video(text: str, path: Path, frames: int = 3) -> Path:
    """A YUV4MPEG2 file of frames showing text's QR code, black on white, centred."""
    rows = [[bool(m) for m in row] for row in segno.make(text, error="m", micro=False).matrix]
    side = (len(rows) + 2 * QUIET) * SCALE
    if side > min(W, H):
        raise ValueError(f"QR of {text!r} is {side} px, larger than the {W}x{H} frame")
    luma = bytearray(b"\xff" * (W * H))
    x0, y0 = (W - side) // 2 + QUIET * SCALE, (H - side) // 2 + QUIET * SCALE
    for r, row in enumerate(rows):
        line = b"".join(b"\x00" * SCALE if dark else b"\xff" * SCALE for dark in row)
        for dy in range(SCALE):
            start = (y0 + r * SCALE + dy) * W + x0
            luma[start:start + len(line)] = line
    chroma = b"\x80" * (W * H // 4)  # no colour
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + bytes(luma) + chroma + chroma)
    return path


def test_qr_video_draws_the_code_it_was_given(tmp_path):
    """The fake camera's picture: the finder pattern's dark corner where the code starts."""
    data = qr_video(DEVEUI_ONLY, tmp_path / "v.y4m", frames=1).read_bytes()
    luma = data[data.index(b"FRAME\n") + 6:][:W * H]
    side = (len(segno.make(DEVEUI_ONLY, error="m", micro=False).matrix) + 2 * QUIET) * SCALE
    x0, y0 = (W - side) // 2 + QUIET * SCALE, (H - side) // 2 + QUIET * SCALE
    assert luma[y0 * W + x0] == 0 and luma[(y0 - 1) * W + x0 - 1] == 0xFF
    assert luma[0] == 0xFF and len(data) == len(f"YUV4MPEG2 W{W} H{H} F10:1 Ip A1:1 C420jpeg\n") \
        + 6 + W * H * 3 // 2


def test_technician_registers_devices_by_scanning_their_labels(fleet_run, tmp_path, artifacts):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it as root "
                    "(tests/system-packages)")
    jsqr = Path(__file__).resolve().parents[2] / "fleet/static/vendor/node_modules/jsqr"
    if not jsqr.is_dir():
        pytest.fail("jsqr is not installed: `make setup` runs npm ci in fleet/static/vendor")
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    db = open_db(fleet_db(tmp_path / "data"))
    auth.create_user(db, "tech", PASSWORD, "technician")
    service.save(db, {"name": "parking-lpp", "codec": "lpp", "interval": 900}, actor="admin")
    cases = [{"video": str(qr_video(TR005, tmp_path / "tr005.y4m")), "name": "Bay 3"},
             {"video": str(qr_video(DEVEUI_ONLY, tmp_path / "eui.y4m")), "name": "Bay 4"}]
    browser = subprocess.run(
        [shutil.which("node") or "node", str(HERE / "qr_scan.mjs")],
        env=dict(os.environ, BASE=f"http://127.0.0.1:{run.port}", USER="tech",
                 PASSWORD=PASSWORD, PROFILE="parking-lpp", ARTIFACTS=str(artifacts),
                 CHROMIUM=CHROMIUM, CASES=json.dumps(cases)),
        cwd=HERE, capture_output=True, text=True, timeout=180)
    assert browser.returncode == 0, browser.stdout + browser.stderr + run.output()
    tr005, eui_only = json.loads(browser.stdout.strip().splitlines()[-1])
    for seen in (tr005, eui_only):
        assert seen["typedBefore"] == "" and seen["cameraStopped"]
        # Whichever reader the browser has; on Debian's Chromium it is jsQR.
        assert seen["jsqrLoaded"] == ("qr_code" not in seen["qrFormats"])
        assert seen["registerStatus"] == 302 and seen["width"] <= 360
    assert tr005["code"] == TR005
    assert tr005["status"] == "DevEUI 70B3D57ED0001003 read from the code."
    assert tr005["flash"] == ["Device 70b3d57ed0001003 registered."]
    assert eui_only["code"] == DEVEUI_ONLY
    assert eui_only["status"] == "DevEUI 70B3D57ED0001004 read from the code."
    assert eui_only["flash"] == ["Device 70b3d57ed0001004 registered."]
    for node, name in (("70b3d57ed0001003", "Bay 3"), ("70b3d57ed0001004", "Bay 4")):
        row = node_store.get_node(db, node)
        assert (row["profile"], row["name"], row["interval"]) == ("parking-lpp", name, 900)
    devices = [e for e in audit_store.audit_log(db) if e["action"] == "device.register"]
    assert {(e["target"], e["actor"]) for e in devices} == {
        ("70b3d57ed0001003", "tech"), ("70b3d57ed0001004", "tech")}
