"""main.py's last resort: a release on trial that breaks before any HAL exists still resets, and
only through the HAL (polylink/hal_esp32.reset()), the factory app's if the release broke its own.

main.py runs in a subprocess on CPython with stand-ins for MicroPython's `machine` and `network`
(the chip's modules cannot exist here): their reset() only records who called it.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "firmware" / "main.py"

RUN = r"""
import builtins, json, sys, traceback, types

machine = types.ModuleType("machine")
def reset():
    caller = sys._getframe(1).f_globals.get("__file__", "?")
    print(json.dumps({"reset_by": caller}))
    raise SystemExit(0)
machine.reset = reset
sys.modules["machine"] = machine
sys.modules["network"] = types.ModuleType("network")

real_open = builtins.open
def fake_open(path, *a, **kw):  # the node's flash root: only the pointer matters here
    if path == "/slot":
        return real_open(SLOT, *a, **kw)
    if isinstance(path, str) and path.startswith("/"):
        raise OSError(2, "no such file on the simulated flash: " + path)
    return real_open(path, *a, **kw)
builtins.open = fake_open
if SLOT_DIR:
    sys.path.insert(0, SLOT_DIR)  # what boot.py does for a slot
code = compile(real_open(MAIN).read(), MAIN, "exec")
try:
    exec(code, {"__name__": "__main__", "__file__": MAIN})
except SystemExit:
    raise
except BaseException:
    traceback.print_exc()
print(json.dumps({"reset_by": None}))
"""


def run_main(tmp_path, trial, slot_dir=None):
    slot = tmp_path / "slot"
    slot.write_text(json.dumps({"active": "a", "trial": trial}))
    prelude = (f"SLOT = {str(slot)!r}\nSLOT_DIR = {str(slot_dir) if slot_dir else ''!r}\n"
               f"MAIN = {str(MAIN)!r}\n")
    r = subprocess.run([sys.executable, "-c", prelude + RUN], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines, r.stdout + r.stderr
    return lines[-1]["reset_by"], r.stdout + r.stderr


def test_main_imports_machine_nowhere():
    # The HAL is the only firmware module that imports machine (STYLE.md).
    assert "import machine" not in MAIN.read_text()


def test_a_trial_release_without_a_board_resets_through_the_hal(tmp_path):
    by, out = run_main(tmp_path, trial=1)
    assert "polylink: cannot start:" in out, out
    assert by and by.endswith("polylink/hal/esp32.py"), out


def test_not_on_trial_it_stops_at_the_repl_instead(tmp_path):
    by, out = run_main(tmp_path, trial=0)
    assert by is None and "polylink: cannot start:" in out, out


def test_a_release_that_broke_its_own_hal_resets_through_the_factory_hal(tmp_path):
    slot = tmp_path / "a"
    (slot / "polylink" / "hal").mkdir(parents=True)
    (slot / "polylink" / "__init__.py").write_text("")
    (slot / "polylink" / "hal" / "__init__.py").write_text("")
    (slot / "polylink" / "hal" / "esp32.py").write_text("raise ImportError('broken release')\n")
    by, out = run_main(tmp_path, trial=1, slot_dir=slot)
    assert "crashed" in out, out
    assert by == str(ROOT / "firmware" / "polylink" / "hal" / "esp32.py"), out
