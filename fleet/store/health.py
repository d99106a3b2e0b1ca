"""What `fleet doctor` reads from the database, opened read-only: it must never create, migrate
or lock a deployment's database while it looks at it."""

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .base import connect
from .migrate import schema_version as _recorded_version


class Unreadable(Exception):
    """The database cannot be reached or read; the text says why (never a password)."""


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def shown(target) -> str:
    """The database as a person may see it: a DATABASE_URL without its password."""
    if isinstance(target, Path):
        return str(target)
    parts = urlsplit(target)
    host = parts.hostname or ""
    login = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{login}{host}{port}", parts.path, "", ""))


def present(target) -> bool:
    """A SQLite file that exists, or a DATABASE_URL (whether it answers is for the checks)."""
    return not isinstance(target, Path) or target.exists()


def _query(target, sqlite_sql: str, sql: str):
    """One value, read-only: the SQLite file opened read-only, PostgreSQL through the store."""
    try:
        if isinstance(target, Path):
            conn = _open(target)
            try:
                return conn.execute(sqlite_sql).fetchone()[0]
            finally:
                conn.close()
        db = connect(target)
        try:
            return _recorded_version(db) if sql == "version" else db.conn.execute(
                sql).fetchone()[0]
        finally:
            db.conn.close()
    except Exception as e:  # noqa: BLE001 - sqlite3 or psycopg, said in one line
        raise Unreadable(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def schema_version(target) -> int:
    """The schema version recorded in the database (Unreadable if it cannot be read)."""
    return _query(target, "PRAGMA user_version", "version")


def newest_node_time(target) -> float | None:
    """The latest time any node was seen, as this machine's clock recorded it (None: no node)."""
    return _query(target, "SELECT MAX(last_seen) FROM nodes", "SELECT MAX(last_seen) FROM nodes")
