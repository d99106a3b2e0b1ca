"""The store is a plain library: no Flask, and importing the package loads none of its modules."""

import ast
import subprocess
import sys
from pathlib import Path

STORE = Path(__file__).resolve().parents[3] / "fleet" / "store"


def test_no_flask_in_the_store():
    for path in STORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] == "flask" for n in names), path


def test_importing_the_package_loads_nothing_else():
    code = ("import sys; import fleet.store; "
            "print(sorted(m for m in sys.modules if m.startswith('fleet.store.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
