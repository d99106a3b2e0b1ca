"""`make lint` inside the suite: ruff on everything, the firmware type-checked as MicroPython."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    result = run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_firmware_type_checks_against_the_micropython_stubs():
    # The venv's site-packages holds micropython-stdlib-stubs' stdlib/ in typeshed layout and
    # micropython-esp32-stubs beside it: with it as typeshed, `time.ticks_ms` exists and
    # CPython-only calls do not (firmware/pyrightconfig.json has the rest of the settings).
    typeshed = sysconfig.get_paths()["purelib"]
    result = run(str(BIN / "pyright"), "-p", "firmware", "--typeshedpath", typeshed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_type_check_uses_micropython_not_cpython(tmp_path):
    # A probe file that is right for MicroPython and wrong for CPython, checked with the same
    # settings: if the stubs were not in use, this would report errors.
    probe = tmp_path / "_typeshed_probe.py"
    probe.write_text("import time\n\nimport machine\n\n"
                     "t = time.ticks_diff(time.ticks_ms(), 0)\npin = machine.Pin(2)\n"
                     "bad = time.ticks_ms().no_such_attribute\n")
    typeshed = sysconfig.get_paths()["purelib"]
    result = run(str(BIN / "pyright"), "-p", "firmware", "--typeshedpath", typeshed, str(probe))
    errors = [line for line in result.stdout.splitlines() if "_typeshed_probe.py:" in line]
    assert len(errors) == 1 and "no_such_attribute" in errors[0], result.stdout
