"""Moving a fleet's store from SQLite to PostgreSQL: every table copied, then compared.

copy_store() reads the SQLite file in one read transaction (a consistent snapshot, even while
other processes write), writes each table into an empty, migrated PostgreSQL database with COPY,
moves the identity sequences past the copied ids, and returns per table the row count and an
order-independent checksum of both sides, which must be equal (CopyMismatch otherwise).
"""

import hashlib
import tempfile
from pathlib import Path

from .base import POSTGRESQL, SQLITE, StoreError, transaction
from .exports import LOG_READING_COMMITS
from .migrate import open_db, schema_version

BATCH = 10_000
# Columns only PostgreSQL has (migration 0029), filled from the SQLite row: readings' id is its
# rowid, so the exports' copied cursors (rowids) name the same rows, and the transaction is 0 for
# every copied row ("committed before"), so a cursor's position (0, rowid) stays in order.
POSTGRESQL_ONLY = {"readings": (("rowid", "id"), ("0", "xact")), "events": (("0", "xact"),)}


class CopyMismatch(StoreError):
    """The copy does not hold the same rows as the source."""


def _value(v) -> bytes:
    # One spelling per value whichever database it came from: REAL/double as repr(float), an
    # INTEGER as its digits, BLOB/bytea as hex, NULL as a byte no text holds.
    if v is None:
        return b"\x00"
    if isinstance(v, float):
        return repr(v).encode()
    if isinstance(v, bytes | memoryview):
        return bytes(v).hex().encode()
    return str(v).encode()


def _row_hash(row) -> int:
    return int.from_bytes(hashlib.sha256(b"\x1f".join(_value(v) for v in row)).digest(), "big")


def _columns(source, table: str) -> list[str]:
    return [r[1] for r in source.conn.execute(f"PRAGMA table_info({table})")]


def _tables(source) -> list[str]:
    """The source's tables, a table after those its foreign keys name."""
    names = [r[0] for r in source.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name")]
    refs = {t: {r[2] for r in source.conn.execute(f"PRAGMA foreign_key_list({t})")} - {t}
            for t in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        for t in names:
            if t not in ordered and refs[t] <= set(ordered):
                ordered.append(t)
    return ordered


def _seeded(tables: list[str]) -> dict[str, int]:
    """Rows a freshly migrated store holds per table (migrations seed a few, e.g. the `polylink`
    device profile): a target holding just those counts as new, and they are replaced."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = open_db(Path(tmp) / "fresh.db")
        try:
            return {t: fresh.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in tables}
        finally:
            fresh.conn.close()


def summary(db, table: str, columns: list[str]) -> tuple[int, int]:
    """(rows, checksum) of a table: the checksum is the sum of its rows' SHA-256, mod 2**256."""
    count, total = 0, 0
    cur = db.conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while rows := cur.fetchmany(BATCH):
        count += len(rows)
        total += sum(_row_hash(r) for r in rows)
    return count, total % 2**256


def copy_store(source, target) -> dict[str, tuple[int, str]]:
    """Copy every table of SQLite `source` into PostgreSQL `target`; {table: (rows, checksum)}."""
    if source.dialect != SQLITE or target.dialect != POSTGRESQL:
        raise StoreError("fleet db copy moves a SQLite store into a PostgreSQL one")
    if schema_version(source) != schema_version(target):
        raise StoreError(f"schema versions differ: SQLite {schema_version(source)}, PostgreSQL"
                         f" {schema_version(target)}; run `fleet migrate` on both first")
    source.conn.execute("BEGIN")  # one snapshot of the whole file
    try:
        tables = _tables(source)
        seeded = _seeded(tables)
        busy = [t for t in tables if target.conn.execute(
            f"SELECT count(*) FROM {t}").fetchone()[0] != seeded[t]]
        if busy:
            raise StoreError(f"the PostgreSQL database is not empty ({', '.join(busy)}):"
                             " copy only into a new, migrated database")
        report = {}
        with transaction(target) as conn:
            raw = conn.raw.cursor()
            for table in reversed(tables):  # the seeds go; the source's own rows replace them
                if seeded[table]:
                    conn.execute(f"DELETE FROM {table}")
            for table in tables:
                cols = _columns(source, table)
                extra = POSTGRESQL_ONLY.get(table, ())
                cur = source.conn.execute(
                    f"SELECT {', '.join(cols + [src for src, _col in extra])} FROM {table}")
                into = ", ".join(cols + [col for _src, col in extra])
                with raw.copy(f"COPY {table} ({into}) FROM STDIN") as copy:
                    while rows := cur.fetchmany(BATCH):
                        for row in rows:
                            copy.write_row(row)
            for table, column in conn.execute(
                    "SELECT table_name, column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall():
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                             f" coalesce(max({column}), 0) + 1, false) FROM {table}")
            conn.execute("SELECT setval('readings_id_seq', coalesce(max(id), 0) + 1, false)"
                         " FROM readings")
            # The readings came with ids of their own, which 0038's triggers cannot log.
            conn.execute(LOG_READING_COMMITS)
        for table in tables:
            cols = _columns(source, table)
            mine, theirs = summary(source, table, cols), summary(target, table, cols)
            if mine != theirs:
                raise CopyMismatch(f"{table}: SQLite has {mine[0]} rows, PostgreSQL {theirs[0]}"
                                   " (or their checksums differ)")
            report[table] = (mine[0], f"{mine[1]:064x}")
        return report
    finally:
        source.conn.execute("ROLLBACK")
