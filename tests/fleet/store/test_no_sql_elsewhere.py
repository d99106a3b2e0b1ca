"""Every SQL statement of the fleet lives in fleet/store/ (one module per domain)."""

import ast
import re
from pathlib import Path

FLEET = Path(__file__).resolve().parents[3] / "fleet"
STORE = FLEET / "store"
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
                 r"|(CREATE|DROP|ALTER)\s+(TABLE|INDEX|VIEW)|PRAGMA\s+\w+|BEGIN\s+IMMEDIATE)\b",
                 re.S)
# Calls that hand SQL to a database, and sqlite-utils' table access by name.
CALLS = {"execute", "executemany", "executescript", "query", "table"}


def findings(path: Path) -> list[str]:
    out = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(FLEET.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL.search(node.value):
                out.append(f"{where}: SQL in a string: {node.value[:60]!r}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in CALLS):
            out.append(f"{where}: .{node.func.attr}(...) call")
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
              and node.value.id == "db"):
            out.append(f"{where}: db[...] table access")
    return out


def test_the_check_finds_sql():
    assert SQL.search("SELECT id FROM nodes") and SQL.search("INSERT OR IGNORE INTO x")
    assert not SQL.search("Select the nodes to update from the list")


def test_no_sql_outside_the_store():
    found = [f for path in sorted(FLEET.rglob("*.py")) if STORE not in path.parents
             for f in findings(path)]
    assert not found, "SQL outside fleet/store/:\n" + "\n".join(found)
