"""Every firmware unit test (tests/firmware/**/test_*.py) also passes under real MicroPython."""

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "mpy" / "run.mjs"
PACKAGE = ROOT / "tests/mpy/node_modules/@micropython/micropython-webassembly-pyscript"
FIRMWARE_TESTS = ROOT / "tests" / "firmware"
LINE = re.compile(r"^(PASS|FAIL) (\S+?)(?:: (.*))?$")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")


def firmware_tests() -> list[str]:
    """Names 'module::function' of the test functions the runner should find, read from source
    (tests/firmware and its subfolders, which mirror the app's subpackages)."""
    names = []
    for path in sorted(FIRMWARE_TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                names.append(f"{path.stem}::{node.name}")
    return names


@pytest.fixture(scope="module")
def mpy_run():
    """Run every firmware test once under MicroPython; map each test name to (status, detail)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js) not found; `.ci/run` installs nodejs and npm")
    if not PACKAGE.is_dir():
        pytest.fail("MicroPython wasm package missing; run: npm ci --prefix tests/mpy")
    proc = subprocess.run(
        [node, str(RUNNER), "tests"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    results: dict[str, tuple[str, str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m:
            current = m.group(2)
            results[current] = (m.group(1), (m.group(3) or "") + "\n")
        elif current and line.startswith("    "):
            status, detail = results[current]
            results[current] = (status, detail + line[4:] + "\n")
    return proc, results


def _tail(proc) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("name", firmware_tests())
def test_passes_under_micropython(mpy_run, name):
    proc, results = mpy_run
    if name not in results:
        pytest.fail(f"{name} did not run under MicroPython\n{_tail(proc)}")
    status, detail = results[name]
    if status != "PASS":
        pytest.fail(f"{name} failed under MicroPython: {detail}")


def test_runner_ran_everything_and_its_exit_status_agrees(mpy_run):
    proc, results = mpy_run
    summary = [SUMMARY.match(line) for line in proc.stdout.splitlines() if SUMMARY.match(line)]
    if not summary:
        pytest.fail(f"the MicroPython runner printed no summary line\n{_tail(proc)}")
    passed, failed = int(summary[-1].group(1)), int(summary[-1].group(2))
    broken = [n for n, (s, _) in results.items() if s != "PASS"]
    assert failed == len(broken), _tail(proc)
    assert passed + failed == len(results), _tail(proc)
    # Import errors show up as "module::<import>"; everything in the sources must have run.
    assert set(firmware_tests()) <= set(results), _tail(proc)
    assert (proc.returncode == 0) == (failed == 0), _tail(proc)
