"""The schema's history: one file per version in migrations/, applied in order.

File NNNN_name.sql moves the schema from version NNNN-1 to NNNN; PRAGMA user_version records
where a database is. Never edit a released migration: add a new file, so old databases upgrade
the same way as fresh ones (tests/fleet/store/test_migrate.py holds each file to its checksum).
"""

import re
import sqlite3
from pathlib import Path

from .base import Database, SchemaTooNew, connect, transaction

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def migration_files(folder: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in version order; ValueError on a stray name or a gap."""
    files = sorted(p for p in folder.iterdir() if p.suffix == ".sql")
    for version, path in enumerate(files, 1):
        m = _NAME.fullmatch(path.name)
        if m is None:
            raise ValueError(f"{path.name}: expected NNNN_name.sql")
        if int(m.group(1)) != version:
            raise ValueError(f"{path.name}: expected version {version:04d} (no gaps)")
    return files


MIGRATIONS = [p.read_text() for p in migration_files()]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Database) -> int:
    """The schema version recorded in the file (0 for an empty file)."""
    return db.conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: Database, target: int | None = None) -> tuple[int, int]:
    """Apply pending migrations in order up to target; return (version before, version after)."""
    target = SCHEMA_VERSION if target is None else target
    before = schema_version(db)
    if before > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema is version {before}, this fleet knows up to {SCHEMA_VERSION}"
        )
    for version in range(before + 1, target + 1):
        with transaction(db) as conn:
            for statement in statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return before, max(before, target)


def statements(script: str):
    """The statements of a migration script, without its comment lines."""
    # executescript() would COMMIT our transaction first; split so a migration is all-or-nothing.
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    buf = ""
    for piece in "\n".join(lines).split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf
            buf = ""


def open_db(path) -> Database:
    """Connect and bring the schema up to date."""
    db = connect(path)
    migrate(db)
    return db
