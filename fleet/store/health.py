"""What `fleet doctor` reads from the database, opened read-only: it must never create, migrate
or lock a deployment's database while it looks at it."""

import sqlite3
from pathlib import Path


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def schema_version(path: Path) -> int:
    """The schema version recorded in the database file at path (sqlite3.Error if unreadable)."""
    conn = _open(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def newest_node_time(path: Path) -> float | None:
    """The latest time any node was seen, as this machine's clock recorded it (None: no node)."""
    conn = _open(path)
    try:
        return conn.execute("SELECT MAX(last_seen) FROM nodes").fetchone()[0]
    finally:
        conn.close()
