# MicroPython side of tests/mpy/run.mjs: runs every test_* function of the firmware test modules.
# run.mjs prepends `SELECTED = [...]` (module names, empty for all) and appends a top-level
# `await _run()` (it runs the code with runPythonAsync), so `async def test_*` are awaited too.
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


async def _run():
    global FAILED
    passed = 0
    names = SELECTED or sorted(
        f[:-3] for f in os.listdir(TEST_DIR) if f.startswith("test_") and f.endswith(".py")
    )
    for mod in names:
        try:
            m = __import__(mod)
        except Exception as e:  # an import error fails the whole module, visibly
            FAILED += 1
            print("FAIL %s::<import>: %s: %s" % (mod, type(e).__name__, e))
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
                print("FAIL %s::%s: %s: %s" % (mod, name, type(e).__name__, e))
                _detail(e)
            else:
                passed += 1
                print("PASS %s::%s" % (mod, name))
    print("%d passed, %d failed" % (passed, FAILED))

