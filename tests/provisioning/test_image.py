"""`make image`: the LittleFS image read back with littlefs-python holds exactly the node's files.

The micropython-lib index (micropython.org/pi) is not reachable from the machine these tests were
written on, so the radio-board test serves a local index in mip's format with stand-in package
files: it proves the fetch, hash check, dependency walk and placement, NOT the real lora drivers.
"""

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from polylink import config as fw_config
from services import fleet_db, free_port

from fleet.broker import auth as brokerauth
from fleet.identity import provision_cli as cli
from fleet.store import identity as identity_store
from fleet.store.migrate import open_db
from provisioning import boards, image, miplib

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
APP = ({"boot.py", "main.py", "manifest.json"}
       | {p.relative_to(FIRMWARE).with_suffix(".mpy").as_posix()
          for p in (FIRMWARE / "polylink").rglob("*.py")})
LORAWAN = {p for p in APP if p.startswith("polylink/lorawan/")}  # only radio boards carry it


# Stand-in app (no mpy-cross): node_files only chooses which files a board carries.
APP_FILES = {p: b"M" + p.encode() for p in APP - {"manifest.json"}}
APP_FILES["manifest.json"] = image.factory_manifest(APP_FILES)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MQTT_URL", raising=False)
    monkeypatch.setattr(cli, "BUILD", tmp_path / "build")
    return tmp_path


def run(*args):
    r = CliRunner().invoke(cli.cli, list(args))
    return r


def _db(env):
    return open_db(fleet_db(env / "data"))


def test_wifi_board_image_holds_exactly_the_node_files(env):
    r = run("image", "--board", "ESP32_GENERIC", "--node", "lamp-1", "--mqtt-host", "10.0.0.2",
            "--wifi-ssid", "city-iot", "--wifi-password", "pw-123",
            "--mip-cache", str(env / "cache"))
    assert r.exit_code == 0, r.output
    out = env / "build" / "images" / "lamp-1.ESP32_GENERIC.littlefs.bin"
    assert "write at 0x200000" in r.output
    data = out.read_bytes()
    board = boards.load("ESP32_GENERIC")
    assert len(data) == boards.fs_partition(board)["size"]
    assert out.stat().st_mode & 0o077 == 0  # it holds the node's password
    files = image.read_back(data)
    assert set(files) == (APP - LORAWAN) | {"board.json", "config.json"}
    assert files["main.py"] == (FIRMWARE / "main.py").read_bytes()
    assert all(files[p][:2] == b"M\x06" for p in files if p.endswith(".mpy"))  # .mpy v6
    assert json.loads(files["board.json"]) == board
    cfg = json.loads(files["config.json"])
    assert cfg["wifi"] == {"ssid": "city-iot", "password": "pw-123"}
    assert (cfg["node"], cfg["mqtt"]["host"], cfg["mqtt"]["user"]) == ("lamp-1", "10.0.0.2",
                                                                       "lamp-1")
    assert "lorawan" not in cfg
    hashes = identity_store.active_mqtt_hashes(_db(env))
    assert brokerauth.verify_password(cfg["mqtt"]["password"], hashes["lamp-1"])
    # The firmware's own validator accepts what the node will boot with.
    assert fw_config.validate(cfg, json.loads(files["board.json"])).node == "lamp-1"


def test_flashing_a_registered_node_again_issues_a_new_password(env):
    first = run("image", "--board", "ESP32_GENERIC", "--node", "lamp-2", "--mqtt-host", "h")
    assert first.exit_code == 0, first.output
    old = json.loads(image.read_back(
        (env / "build/images/lamp-2.ESP32_GENERIC.littlefs.bin").read_bytes())["config.json"])
    run("image", "--board", "ESP32_GENERIC", "--node", "lamp-2", "--mqtt-host", "h")
    new = json.loads(image.read_back(
        (env / "build/images/lamp-2.ESP32_GENERIC.littlefs.bin").read_bytes())["config.json"])
    hashes = identity_store.active_mqtt_hashes(_db(env))
    assert not brokerauth.verify_password(old["mqtt"]["password"], hashes["lamp-2"])
    assert brokerauth.verify_password(new["mqtt"]["password"], hashes["lamp-2"])


class Index:
    """A micropython-lib index in mip's format on a local HTTP server (stand-in files)."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        packages = {
            "lora-sx126x": ({"lora/sx126x.py": b"# stand-in for micropython-lib lora-sx126x\n"},
                            [["lora", "latest"]]),
            "lora-async": ({"lora/async_modem.py": b"# stand-in for lora-async\n"},
                           [["lora", "latest"]]),
            "lora": ({"lora/__init__.py": b"# stand-in for lora\n",
                      "lora/modem.py": b"# stand-in for lora modem\n"}, []),
        }
        for name, (files, deps) in packages.items():
            hashes = []
            for path, content in files.items():
                short = hashlib.sha256(content).hexdigest()[:8]
                f = root / "file" / short[:2] / short
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(content)
                hashes.append([path, short])
            meta = root / "package" / "6" / name / "latest.json"
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"hashes": hashes, "deps": deps, "version": "0.1"}))
        index = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                index.requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_radio_board_image_carries_the_lora_packages_and_keys(env):
    index = Index(env / "index")
    try:
        r = run("image", "--board", "HELTEC_V3", "--node", "lora-1", "--mqtt-host", "h",
                "--mip-index", index.url, "--mip-cache", str(env / "cache"))
    finally:
        index.close()
    assert r.exit_code == 0, r.output
    data = (env / "build/images/lora-1.HELTEC_V3.littlefs.bin").read_bytes()
    board = boards.load("HELTEC_V3")
    assert len(data) == boards.fs_partition(board)["size"]
    files = image.read_back(data)
    assert set(files) == APP | {"board.json", "config.json", "lib/lora/sx126x.py",
                                "lib/lora/async_modem.py", "lib/lora/__init__.py",
                                "lib/lora/modem.py"}
    cfg = json.loads(files["config.json"])
    assert cfg["lorawan"] == identity_store.lorawan_keys(_db(env), "lora-1")
    assert fw_config.validate(cfg, board).lorawan["app_key"] == cfg["lorawan"]["app_key"]
    # A second build needs no network: the cache holds the packages.
    dead = f"http://127.0.0.1:{free_port()}/pi/v2"
    r = run("image", "--board", "HELTEC_V3", "--node", "lora-1", "--mqtt-host", "h",
            "--mip-index", dead, "--mip-cache", str(env / "cache"))
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("name", boards.names())
def test_only_a_board_with_a_radio_carries_the_lorawan_code(name):
    board = boards.load(name)
    files = image.node_files(board, {"node": "n-1"}, {}, app=APP_FILES)
    lora = {p for p in files if p.startswith("polylink/lorawan/")}
    assert lora == (LORAWAN if board["radio"] else set()), name
    assert "polylink/lorawan/device.mpy" in LORAWAN and "polylink/net/mqtt.mpy" in files
    # The factory manifest lists exactly the app files the image holds (the first update's delta).
    listed = {f["path"] for f in json.loads(files["manifest.json"])["files"]}
    assert listed == {p for p in files if p.startswith("polylink/")}


def test_unreachable_index_is_a_clear_error(env):
    dead = f"http://127.0.0.1:{free_port()}/pi/v2"
    r = run("image", "--board", "LILYGO_T3_S3", "--node", "lora-2", "--mqtt-host", "h",
            "--mip-index", dead, "--mip-cache", str(env / "empty-cache"))
    assert r.exit_code == 1
    assert "cannot fetch" in r.output and "lora-sx126x" in r.output and "--mip-cache" in r.output
    assert "Traceback" not in r.output


def test_tampered_package_is_refused(env, tmp_path):
    index = Index(env / "index")
    for f in (env / "index" / "file").rglob("*"):
        if f.is_file() and b"sx126x" in f.read_bytes():
            f.write_bytes(b"# evil\n")
    try:
        with pytest.raises(miplib.MipError, match="does not match its hash"):
            miplib.fetch(["lora-sx126x"], index.url)
    finally:
        index.close()


def test_bad_input_is_refused_before_anything_is_registered(env):
    r = run("image", "--board", "NOPE", "--node", "x-1", "--mqtt-host", "h")
    assert r.exit_code == 1 and "unknown board 'NOPE'" in r.output
    r = run("image", "--board", "ESP32_GENERIC", "--node", "x-1")
    assert r.exit_code == 2 and "NODE_MQTT_HOST" in r.output
    assert identity_store.get_credentials(_db(env), "x-1") is None


def test_files_that_do_not_fit_are_an_error():
    with pytest.raises(image.ImageError, match="do not fit"):
        image.pack({"big.bin": bytes(64 * 1024)}, 32 * 1024)
