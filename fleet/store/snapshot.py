"""A consistent copy of the database while the fleet writes to it, and checks of such a copy.

SQLite's online backup API copies page by page under the database's own locking, so the copy
is one committed state even while the ingest worker commits (a `cp` of a WAL database can be
torn). A PostgreSQL store is copied by pg_dump instead (pgdump.py).
"""

import sqlite3
from pathlib import Path


class SnapshotError(Exception):
    """A database copy cannot be made, or a copy is damaged."""


def copy_database(source: Path, dest: Path) -> int:
    """Copy the database at source into a new file dest; return its schema version."""
    if not Path(source).is_file():
        raise SnapshotError(f"no database at {source}")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(str(dest))
        try:
            # Pages in steps, so the ingest worker is never held up for the whole copy.
            src.backup(out, pages=1024)
            out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            return out.execute("PRAGMA user_version").fetchone()[0]
        finally:
            out.close()
    except sqlite3.Error as e:
        raise SnapshotError(f"cannot copy the database {source}: {e}") from None
    finally:
        src.close()


def check_database(path: Path) -> int:
    """The schema version of the database file at path; SnapshotError if it is damaged."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise SnapshotError(f"the database in the backup is damaged: {problems[0]}")
            return conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise SnapshotError(f"the database in the backup cannot be read: {e}") from None
