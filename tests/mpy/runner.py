# MicroPython side of tests/mpy/run.mjs: runs every test_* function of the firmware test modules.
# run.mjs appends a top-level `await _run([...])` (module names, empty for all) and runs it with
# runPythonAsync, so `async def test_*` functions are awaited too.
import io
import os
import sys

TEST_DIR = "/tests/firmware"
FAILED = 0


def _detail(exc):
    s = io.StringIO()
    sys.print_exception(exc, s)
    for line in s.getvalue().split("\n"):
        if line:
            print("    " + line)


def _find(d, out):
    """Test module names under d; each folder goes on sys.path (tests/firmware mirrors the app's
    subpackages, and test module names are unique across them)."""
    for entry in os.ilistdir(d):
        name = entry[0]
        if entry[1] == 0x4000:  # a folder
            if name != "__pycache__":
                sys.path.append(d + "/" + name)
                _find(d + "/" + name, out)
        elif name.startswith("test_") and name.endswith(".py"):
            out.append(name[:-3])
    return out


async def _run(selected):
    global FAILED
    passed = 0
    found = sorted(_find(TEST_DIR, []))
    names = selected or found
    for mod in names:
        try:
            m = __import__(mod)
        except Exception as e:  # an import error fails the whole module, visibly
            FAILED += 1
            print(f"FAIL {mod}::<import>: {type(e).__name__}: {e}")
            _detail(e)
            continue
        tests = sorted(n for n in dir(m) if n.startswith("test_") and callable(getattr(m, n)))
        for name in tests:
            try:
                r = getattr(m, name)()
                if r is not None and hasattr(r, "send"):  # a coroutine: async def test_*
                    await r
            except Exception as e:
                FAILED += 1
                print(f"FAIL {mod}::{name}: {type(e).__name__}: {e}")
                _detail(e)
            else:
                passed += 1
                print(f"PASS {mod}::{name}")
    print(f"{passed} passed, {FAILED} failed")

