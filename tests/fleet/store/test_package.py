"""The store is a plain library: no Flask, and importing the package loads none of its modules."""

import ast
from pathlib import Path

STORE = Path(__file__).resolve().parents[3] / "fleet" / "store"


def test_no_flask_in_the_store():
    for path in STORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] == "flask" for n in names), path


def test_importing_the_package_loads_nothing_else():
    # The package's __init__ is its docstring alone: a caller loads only the modules it names.
    tree = ast.parse((STORE / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), "a docstring only"
