"""`make flash` against a fake serial port (a pty) and a recording stand-in for esptool.

No ESP32 is attached here: tests/provisioning/fake_esptool.py answers as esptool 5.x does and
records the exact command lines. The end-to-end test then boots the image it was given in the
host port (real firmware, real mosquitto with the fleet's logins, real ingest via `fleet run`),
so "node reported in" is the real path; only the chip and the USB cable are simulated.
"""

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from polylink_host import sim
from services import READY, fleet_db

from fleet.identity import provision_cli as cli
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store.migrate import open_db
from provisioning import image

FAKE = Path(__file__).with_name("fake_esptool.py")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MQTT_URL", raising=False)
    monkeypatch.setenv("ESPTOOL", f"{sys.executable} {FAKE}")
    monkeypatch.setenv("FAKE_TOOL_LOG", str(tmp_path / "tools.log"))
    monkeypatch.setenv("NODE_MQTT_HOST", "127.0.0.1")
    monkeypatch.setattr(cli, "BUILD", tmp_path / "build")
    return tmp_path


class Pty:
    """A pseudo-terminal: the port the tool opens, and our end where the 'chip' writes."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        self.port = os.ttyname(self.slave)
        self.lock = threading.Lock()
        self.closed = False

    def say(self, *lines):
        # Under the lock: once closed, a chip thread still running must not write to a file
        # descriptor number the next test's pty may already reuse.
        with self.lock:
            if self.closed:
                raise OSError("pty closed")
            for line in lines:
                os.write(self.master, line.encode() + b"\r\n")

    def keep_saying(self, *lines, every=0.3, until=20.0):
        """Print lines again and again (a retrying chip): the tool opens the port only after
        esptool is done with it, and opening it flushes what came before, as on real hardware."""
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            try:
                self.say(*lines)
            except OSError:
                return
            time.sleep(every)

    def close(self):
        with self.lock:
            self.closed = True
            os.close(self.master)
            os.close(self.slave)


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def calls(env) -> list[list[str]]:
    path = env / "tools.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_write(env, offset: str, timeout=30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in calls(env):
            if "write-flash" in c and offset in c:
                return c
        time.sleep(0.05)
    raise AssertionError(f"no write-flash at {offset}: {calls(env)}")


def firmware(env, version="1.29.0") -> Path:
    path = env / f"micropython-{version}.bin"
    # A stand-in firmware file: esptool is faked, so only the version banner is read from it.
    path.write_bytes(b"\xe9" + bytes(5000) + f"MicroPython v{version} on 2026-11-01".encode()
                     + bytes(100))
    return path


def flash(*args, **kw):
    return CliRunner().invoke(cli.cli, ["flash", *args], **kw)


def test_flash_writes_firmware_and_image_then_the_node_reports_in(env, pty, fleet_run,
                                                                  monkeypatch):
    monkeypatch.setenv("FAKE_MAC", "24:6f:28:aa:bb:cc")
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    fw = firmware(env)
    booted = {}

    def chip():
        """After esptool wrote the image: print a boot log and boot it in the host port."""
        cmd = wait_for_write(env, "0x200000")
        files = image.read_back(Path(cmd[-1]).read_bytes())
        root = env / "device"
        root.mkdir()
        for name in ("board.json", "config.json"):
            (root / name).write_bytes(files[name])
        threading.Thread(target=pty.keep_saying, daemon=True, kwargs={"until": 8}, args=(
            "rst:0x1 (POWERON_RESET),boot:0x13",
            "MicroPython v1.29.0 on 2026-11-01; Generic ESP32 module with ESP32")).start()
        node = sim.SimNode(json.loads(files["config.json"])["node"], root)
        booted["config"] = json.loads(files["config.json"])

        async def boot():
            task = asyncio.create_task(node.run())
            await asyncio.sleep(8)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(boot())

    t = threading.Thread(target=chip, daemon=True)
    t.start()
    r = flash("--board", "ESP32_GENERIC", "--port", pty.port, "--node", "lamp-1", "--firmware",
              str(fw), "--mqtt-port", str(run.mqtt_port), "--wifi-ssid", "city-iot",
              "--timeout", "30")
    t.join(20)
    assert r.exit_code == 0, r.output
    assert "node lamp-1 is online" in r.output
    assert "console| MicroPython v1.29.0" in r.output
    image_path = str(env / "build" / "images" / "lamp-1.ESP32_GENERIC.littlefs.bin")
    p = pty.port
    assert calls(env) == [
        ["esptool", "--port", p, "--chip", "auto", "--baud", "115200", "flash-id"],
        ["esptool", "--chip", "esp32", "--port", p, "--baud", "460800", "erase-flash"],
        ["esptool", "--chip", "esp32", "--port", p, "--baud", "460800", "write-flash", "-z",
         "0x1000", str(fw)],
        ["esptool", "--chip", "esp32", "--port", p, "--baud", "460800", "write-flash",
         "0x200000", image_path],
    ]
    db = open_db(fleet_db(env / "data"))
    assert identity_store.get_credentials(db, "lamp-1")["mac"] == "246f28aabbcc"
    assert node_store.get_node(db, "lamp-1")["last_seen"] is not None
    assert booted["config"]["mqtt"]["port"] == run.mqtt_port


@pytest.mark.parametrize("case, extra_env, args, message", [
    ("no port", {}, ["--port", "/dev/ttyNOPE9"], "no port /dev/ttyNOPE9"),
    ("empty port", {}, ["--port", ""], "no PORT given"),
    ("wrong chip", {"FAKE_CHIP": "ESP32-S3"}, [], "wrong chip: board ESP32_GENERIC has an esp32, "
                                                 "but the board on"),
    ("too small", {"FAKE_FLASH": "2MB"}, [], "flash too small: board ESP32_GENERIC needs 4 MB"),
    ("no answer", {"FAKE_NO_CHIP": "1"}, [], "Failed to connect to ESP32: No serial data"),
])
def test_clear_errors_before_anything_is_written(env, pty, monkeypatch, case, extra_env, args,
                                                 message):
    for k, v in extra_env.items():
        monkeypatch.setenv(k, v)
    r = flash("--board", "ESP32_GENERIC", "--node", "n-1", *(args or ["--port", pty.port]))
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not any("write-flash" in c for c in calls(env))
    assert identity_store.get_credentials(open_db(fleet_db(env / "data")), "n-1") is None


def test_wrong_micropython_version_is_refused_before_esptool_runs(env, pty):
    r = flash("--board", "ESP32_GENERIC", "--port", pty.port, "--firmware",
              str(firmware(env, "1.19.1")))
    assert r.exit_code == 1
    assert "wrong MicroPython version: FIRMWARE" in r.output and "1.19.1" in r.output
    assert "1.23 or later" in r.output
    assert calls(env) == []
    junk = env / "junk.bin"
    junk.write_bytes(bytes(1000))
    r = flash("--board", "ESP32_GENERIC", "--port", pty.port, "--firmware", str(junk))
    assert r.exit_code == 1 and "is not a MicroPython firmware" in r.output


def test_node_that_never_reports_is_an_error_with_its_console(env, pty):
    def chip():
        wait_for_write(env, "0x200000")
        pty.keep_saying("wifi: connecting to city-iot", "wifi: no AP", until=5)

    threading.Thread(target=chip, daemon=True).start()
    r = flash("--board", "ESP32_GENERIC", "--port", pty.port, "--node", "n-2", "--timeout", "3")
    assert r.exit_code == 1
    assert "node never reported in to the fleet within 3 s" in r.output
    assert "| wifi: no AP" in r.output


def test_a_node_that_stops_at_boot_is_reported_at_once(env, pty):
    def chip():
        wait_for_write(env, "0x200000")
        pty.keep_saying("polylink: cannot start: config.json: mqtt.host is empty", until=10)

    threading.Thread(target=chip, daemon=True).start()
    started = time.monotonic()
    r = flash("--board", "ESP32_GENERIC", "--port", pty.port, "--timeout", "30")
    assert r.exit_code == 1 and "the node stopped at boot: polylink: cannot start" in r.output
    assert time.monotonic() - started < 20


def test_batch_flashes_each_board_and_summarises(env, pty):
    second = Pty()

    def fleet_hears_each_node():
        """Stands in for the ingest: marks a node seen once its image was written."""
        seen = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 2:
            for c in calls(env):
                if "write-flash" in c and c[-1] not in seen:
                    seen.add(c[-1])
                    node = Path(c[-1]).name.split(".")[0]
                    db = open_db(fleet_db(env / "data"))
                    db.conn.execute("UPDATE nodes SET last_seen = ? WHERE id = ?",
                                    (time.time() + 1, node))
                    db.conn.close()
            time.sleep(0.05)

    threading.Thread(target=fleet_hears_each_node, daemon=True).start()
    try:
        r = CliRunner().invoke(cli.cli, ["batch", "--board", "ESP32_GENERIC", "--port", pty.port,
                                         "--port", "/dev/ttyNOPE9", "--port", second.port,
                                         "--timeout", "15"])
    finally:
        second.close()
    assert r.exit_code == 1, r.output
    assert "[1/3] " + pty.port in r.output and "[3/3] " + second.port in r.output
    assert "summary: 3 boards, 2 ok, 1 failed" in r.output, r.output
    assert "failed  /dev/ttyNOPE9  no port /dev/ttyNOPE9" in r.output
    db = open_db(fleet_db(env / "data"))
    assert len(identity_store.active_mqtt_hashes(db)) == 2
