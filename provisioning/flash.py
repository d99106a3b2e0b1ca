"""Flashing a board: esptool writes MicroPython and the node's image; the console shows it boot.

Every esptool and mpremote call goes through `run_tool`, whose command prefix can be replaced with
the ESPTOOL / MPREMOTE environment variables (a different install, or the tests' recorder).
"""

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Where the ROM bootloader expects the second-stage bootloader, i.e. where a MicroPython
# firmware.bin (bootloader + partition table + app) starts: micropython.org/download per chip.
FIRMWARE_OFFSET = {"esp32": 0x1000, "esp32s3": 0x0}
BAUD = 460800
# .mpy files from our mpy-cross (v6) run on MicroPython 1.23 and later.
MIN_MICROPYTHON = (1, 23)
MPY_VERSION = 6


class FlashError(RuntimeError):
    """A board could not be flashed; the message says what to do."""


@dataclass
class Probe:
    chip: str  # esp32 | esp32s3 | ...
    description: str
    mac: str | None
    flash_size: int | None


def tool(name: str) -> list[str]:
    """The command prefix for esptool or mpremote (env ESPTOOL / MPREMOTE override it)."""
    override = os.environ.get(name.upper())
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", name]


def run_tool(name: str, args: list[str], timeout: float = 300) -> str:
    """Run esptool/mpremote with args; return its output or raise FlashError with its last lines."""
    cmd = tool(name) + args
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError(f"{name} did not finish within {timeout:.0f} s: "
                         f"{shlex.join(cmd)}") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-3:])
        raise FlashError(f"{name} failed ({shlex.join(args[:4])} ...): {tail}")
    return out


def check_port(port: str) -> None:
    """FlashError unless the serial port exists."""
    if not port:
        raise FlashError("no PORT given: say which serial port the board is on, "
                         "e.g. make flash PORT=/dev/ttyUSB0 (ls /dev/ttyUSB* /dev/ttyACM*)")
    if not os.path.exists(port):
        raise FlashError(f"no port {port}: is the board plugged in and its USB cable a data "
                         "cable? (ls /dev/ttyUSB* /dev/ttyACM*)")


def _size(text: str) -> int | None:
    m = re.match(r"(\d+)\s*([KM])B", text)
    if not m:
        return None
    return int(m.group(1)) * (1024 if m.group(2) == "K" else 1024 * 1024)


def probe(port: str) -> Probe:
    """Ask the chip on port what it is (esptool flash-id): chip, MAC, flash size."""
    out = run_tool("esptool", ["--port", port, "--chip", "auto", "--baud", "115200", "flash-id"],
                   timeout=60)
    m = re.search(r"Connected to (\S+) on", out)
    if not m:
        raise FlashError(f"esptool did not say which chip is on {port}:\n{out.strip()[-300:]}")
    name = m.group(1).rstrip(":")
    desc = re.search(r"Chip type:\s+(.+)", out)
    mac = re.search(r"^MAC:\s+([0-9a-f:]{17})", out, re.M)
    size = re.search(r"Detected flash size:\s+(\S+)", out)
    return Probe(chip=name.lower().replace("-", ""), description=desc.group(1) if desc else name,
                 mac=mac.group(1) if mac else None,
                 flash_size=_size(size.group(1)) if size else None)


def check_board(board: dict, found: Probe, port: str) -> None:
    """FlashError if the chip on port is not the board's, or its flash is too small."""
    if found.chip != board["chip"]:
        raise FlashError(f"wrong chip: board {board['name']} has an {board['chip']}, but the "
                         f"board on {port} is an {found.description}. Pick the right BOARD "
                         "(ls boards/)")
    if found.flash_size is None:
        raise FlashError(f"esptool could not detect the flash size of the board on {port}")
    if found.flash_size < board["flash_size"]:
        raise FlashError(f"flash too small: board {board['name']} needs "
                         f"{board['flash_size'] // 1048576} MB, the board on {port} has "
                         f"{found.flash_size // 1048576} MB")


def micropython_version(firmware: Path) -> tuple[int, int, int]:
    """The MicroPython version a firmware .bin says it is (its banner string)."""
    if not firmware.is_file():
        raise FlashError(f"no firmware file {firmware}")
    with open(firmware, "rb") as f:
        # The banner sits in the app's read-only data; read in chunks, never the whole file.
        tail = b""
        while chunk := f.read(65536):
            m = re.search(rb"MicroPython v(\d+)\.(\d+)\.(\d+)", tail + chunk)
            if m:
                return int(m.group(1)), int(m.group(2)), int(m.group(3))
            tail = chunk[-64:]
    raise FlashError(f"{firmware} is not a MicroPython firmware (no 'MicroPython vX.Y.Z' in it)")


def check_version(version: tuple[int, int, int], what: str) -> None:
    if version[:2] < MIN_MICROPYTHON:
        raise FlashError(f"wrong MicroPython version: {what} is {'.'.join(map(str, version))}; "
                         f"Polylink's .mpy files need MicroPython "
                         f"{'.'.join(map(str, MIN_MICROPYTHON))} or later (.mpy v{MPY_VERSION}). "
                         "Download a newer one from micropython.org/download")


def write_firmware(board: dict, port: str, firmware: Path, baud: int = BAUD) -> None:
    """Erase the flash and write a MicroPython firmware.bin at the chip's bootloader offset."""
    chip = board["chip"]
    run_tool("esptool", ["--chip", chip, "--port", port, "--baud", str(baud), "erase-flash"])
    run_tool("esptool", ["--chip", chip, "--port", port, "--baud", str(baud), "write-flash",
                         "-z", hex(FIRMWARE_OFFSET[chip]), str(firmware)])


def write_image(board: dict, port: str, image_path: Path, offset: int, baud: int = BAUD) -> None:
    """Write the filesystem image at the vfs partition's offset; esptool then resets the chip."""
    run_tool("esptool", ["--chip", board["chip"], "--port", port, "--baud", str(baud),
                         "write-flash", hex(offset), str(image_path)])


def watch(port: str, reported, timeout: float, echo=print) -> None:
    """Show the node's console until reported() is true; FlashError on a fatal line or timeout."""
    import serial  # here, not at the top: pyserial is needed only to watch a flashed board

    last: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        console = serial.serial_for_url(port, 115200, timeout=0.2)
    except (serial.SerialException, OSError) as e:
        raise FlashError(f"cannot open {port} to watch the node boot: {e}") from None
    buf = b""
    try:
        while time.monotonic() < deadline:
            if reported():
                return
            try:
                buf += console.read(256)
            except (serial.SerialException, OSError):
                time.sleep(0.2)  # the port blinks while the chip resets
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                last = (last + [line])[-8:]
                echo(f"  console| {line}")
                if line.startswith("polylink: cannot start:") or line.startswith("Traceback"):
                    raise FlashError(f"the node stopped at boot: {line}")
        if reported():
            return
    finally:
        console.close()
    shown = "\n".join(f"  | {s}" for s in last) or "  (nothing on the console)"
    raise FlashError(f"node never reported in to the fleet within {timeout:.0f} s. Check the WiFi "
                     f"settings (WIFI_SSID) and that NODE_MQTT_HOST is reachable from the node. "
                     f"Last console lines:\n{shown}")


def deploy_files(port: str, app_dir: Path) -> str:
    """Copy the changed app files with mpremote (it skips files whose hash matches) and reset."""
    out = run_tool("mpremote", ["connect", port, "exec",
                                "import sys; print('mpy', sys.implementation._mpy & 0xff, "
                                "'ver', '%d.%d.%d' % sys.implementation.version[:3])"], timeout=30)
    m = re.search(r"mpy (\d+) ver (\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise FlashError(f"the board on {port} did not answer at the MicroPython REPL:\n"
                         f"{out.strip()[-300:]}")
    check_version((int(m.group(2)), int(m.group(3)), int(m.group(4))), f"the board on {port}")
    names = sorted(p.name for p in app_dir.iterdir())
    return run_tool("mpremote", ["connect", port, "cp", "-r", *[str(app_dir / n) for n in names],
                                 ":", "+", "reset"], timeout=300)
