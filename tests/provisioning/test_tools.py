"""`make deploy` (mpremote), `make merged-image` (esptool merge-bin, inspected with image-info),
and labels. mpremote is a recording stand-in (no board attached); esptool's merge-bin and
image-info are the real ones, run on files."""

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from esptool.bin_image import ELFSection, ESP32FirmwareImage
from services import fleet_db

from fleet.identity import provision_cli as cli
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store.migrate import open_db
from provisioning import boards, image, label

HERE = Path(__file__).parent


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MQTT_URL", raising=False)
    monkeypatch.setenv("MPREMOTE", f"{sys.executable} {HERE / 'fake_mpremote.py'}")
    monkeypatch.setenv("FAKE_TOOL_LOG", str(tmp_path / "tools.log"))
    monkeypatch.setenv("FAKE_DEVICE_DIR", str(tmp_path / "device"))
    monkeypatch.setenv("NODE_MQTT_HOST", "10.0.0.2")
    monkeypatch.setattr(cli, "BUILD", tmp_path / "build")
    (tmp_path / "device").mkdir()
    return tmp_path


def calls(env):
    path = env / "tools.log"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def qr_path(url: str) -> str:
    """The module drawing of url's QR code (the path segno draws for it)."""
    return re.search(r' d="([^"]+)"', label.qr_svg(url)).group(1)


def invoke(*args):
    return CliRunner().invoke(cli.cli, list(args))


def test_deploy_copies_only_changed_files_and_resets(env):
    port = os.ttyname(os.openpty()[1])
    r = invoke("deploy", "--port", port)
    assert r.exit_code == 0, r.output
    app = image.compile_app()
    assert f"{len(app)} files copied, 0 up to date" in r.output
    deploy = str(env / "build" / "deploy")
    assert calls(env) == [
        ["mpremote", "connect", port, "exec",
         "import sys; print('mpy', sys.implementation._mpy & 0xff, 'ver', "
         "'%d.%d.%d' % sys.implementation.version[:3])"],
        ["mpremote", "connect", port, "cp", "-r", f"{deploy}/boot.py", f"{deploy}/main.py",
         f"{deploy}/manifest.json", f"{deploy}/polylink", ":", "+", "reset"],
    ]
    assert (env / "device" / "polylink" / "proto.mpy").read_bytes() == app["polylink/proto.mpy"]
    (env / "device" / "polylink" / "proto.mpy").write_bytes(b"old")
    r = invoke("deploy", "--port", port)
    assert f"1 files copied, {len(app) - 1} up to date" in r.output


def test_deploy_for_a_wifi_only_board_leaves_the_lorawan_code_out(env):
    port = os.ttyname(os.openpty()[1])
    r = invoke("deploy", "--port", port, "--board", "ESP32_GENERIC")
    assert r.exit_code == 0, r.output
    device = env / "device" / "polylink"
    assert (device / "net" / "mqtt.mpy").is_file() and (device / "ota" / "agent.mpy").is_file()
    assert not (device / "lorawan").exists()
    r = invoke("deploy", "--port", port, "--board", "HELTEC_V3")
    assert r.exit_code == 0, r.output
    assert (device / "lorawan" / "device.mpy").is_file()


def test_deploy_refuses_an_old_micropython_and_a_missing_port(env, monkeypatch):
    port = os.ttyname(os.openpty()[1])
    monkeypatch.setenv("FAKE_MP_VERSION", "1.19.1")
    r = invoke("deploy", "--port", port)
    assert r.exit_code == 1
    assert "wrong MicroPython version: the board on" in r.output and "1.19.1" in r.output
    assert not any("cp" in c for c in calls(env))
    r = invoke("deploy", "--port", "/dev/ttyNOPE9")
    assert r.exit_code == 1 and "no port /dev/ttyNOPE9" in r.output


def _firmware(path: Path) -> Path:
    """A small but valid ESP32 app image made with esptool's own image classes."""
    img = ESP32FirmwareImage()
    img.entrypoint = 0x40080000
    banner = b"MicroPython v1.29.0 on 2026-11-01; Generic ESP32 module with ESP32\0\0\0\0"
    img.segments = [ELFSection(b".dram0.data", 0x3FFB0000, banner[: len(banner) // 4 * 4], 0)]
    img.save(str(path))
    return path


def test_merged_image_holds_firmware_and_filesystem_at_their_offsets(env):
    fw = _firmware(env / "fw.bin")
    r = invoke("merged-image", "--board", "ESP32_GENERIC", "--firmware", str(fw), "--node",
               "lamp-7")
    assert r.exit_code == 0, r.output
    merged = (env / "build" / "merged" / "lamp-7.ESP32_GENERIC.merged.bin").read_bytes()
    fs = boards.fs_partition(boards.load("ESP32_GENERIC"))
    assert len(merged) == fs["offset"] + fs["size"]
    files = image.read_back(merged[fs["offset"]:])
    assert json.loads(files["config.json"])["node"] == "lamp-7"
    # esptool's image tool reads the app where the ROM will find it.
    app = env / "app.bin"
    app.write_bytes(merged[0x1000:0x1000 + fw.stat().st_size])
    info = subprocess.run([sys.executable, "-m", "esptool", "--chip", "esp32", "image-info",
                           str(app)], capture_output=True, text=True)
    assert info.returncode == 0, info.stdout + info.stderr
    assert re.search(r"Entry point:\s+0x40080000", info.stdout), info.stdout
    assert "Flash size: 4MB" in info.stdout and "(valid)" in info.stdout


def test_label_qr_opens_the_node_page(env):
    r = CliRunner().invoke(cli.cli, ["image", "--board", "HELTEC_WIFI_LORA_32_V2", "--node",
                                     "lamp-8", "--mip-cache", str(env / "c"), "--mip-index",
                                     "http://127.0.0.1:9/none"])
    assert r.exit_code == 1 and "cannot fetch" in r.output  # no package index here
    from fleet.identity import provision
    from fleet.settings import from_env

    db = open_db(fleet_db(env / "data"))
    # the failed build registered nothing
    assert identity_store.get_credentials(db, "lamp-8") is None
    ident = provision.register(db, from_env(), "lamp-8", board="HELTEC_WIFI_LORA_32_V2")
    r = invoke("label", "--node", "lamp-8", "--fleet-url", "https://fleet.city/")
    assert r.exit_code == 0, r.output
    svg = (env / "build" / "labels" / "lamp-8.svg").read_text()
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    eui = ident["lorawan"]["dev_eui"]
    assert texts[:3] == ["lamp-8", "HELTEC_WIFI_LORA_32_V2", f"DevEUI {eui}"]
    # The QR code is segno's encoding of exactly the node's URL.
    assert qr_path("https://fleet.city/nodes/lamp-8") in svg
    assert ident["mqtt"]["password"] not in svg and ident["lorawan"]["app_key"] not in svg
    assert invoke("label", "--node", "nope").exit_code == 1


def test_label_page_in_the_ui(logged_in_client):
    r = logged_in_client.get("/provision/n1/label.svg")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"
    assert qr_path("http://localhost/nodes/n1") in r.get_data(as_text=True)
    assert logged_in_client.get("/provision/nope/label.svg").status_code == 404


@pytest.fixture
def logged_in_client(tmp_path):
    from fleet import create_app
    from fleet.settings import Settings
    from fleet.web.auth import create_user

    settings = Settings(data_dir=tmp_path / "d", port=8000, mqtt_port=1, mqtt_url=None)
    app = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "t",
                      "WTF_CSRF_ENABLED": False})
    db = open_db(settings.db_path)
    create_user(db, "v", "long enough pw", "viewer")
    node_store.enrol_node(db, "n1", board="ESP32_GENERIC")
    c = app.test_client()
    assert c.post("/auth/login", data={"username": "v", "password": "long enough pw"}
                  ).status_code == 302
    return c
