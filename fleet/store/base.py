"""Connections, transactions and the store's errors; no Flask, no domain SQL.

Two dialects sit behind the same domain modules (docs/architecture.md, "Storage"):
- SQLite (the default: one file, nothing to set up) through sqlite-utils;
- PostgreSQL (DATABASE_URL=postgresql://...) through psycopg 3.

connect() is the one place that knows which database a path or URL names, and transaction() the
one place that opens and ends a write. Statements are written once, with sqlite3's placeholders
(`?` and `:name`); the PostgreSQL connection rewrites them to psycopg's (`%s`, `%(name)s`) and
drops SQLite's INDEXED BY hints. A statement whose text must differ is a
`{"sqlite": ..., "postgresql": ...}` dict picked with `conn.dialect` / `db.dialect`, both texts
side by side in the domain module.
"""

import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from functools import lru_cache

import sqlite_utils

from fleet.datadir import private_file

SQLITE, POSTGRESQL = "sqlite", "postgresql"
URL_SCHEMES = ("postgresql://", "postgres://")
# Spellings more than one domain module needs, by dialect ({} is the operand):
# a non-negative number rounded down to an integer (SQLite's CAST truncates, PostgreSQL's rounds).
TRUNCATE = {SQLITE: "CAST(({}) AS INTEGER)", POSTGRESQL: "CAST(floor({}) AS INTEGER)"}
# The larger of two values: SQLite's scalar max(), PostgreSQL's greatest() (its max() is only the
# aggregate). They differ on a NULL (max() gives NULL, greatest() skips it): callers coalesce.
GREATEST = {SQLITE: "max", POSTGRESQL: "greatest"}
# The elements of a JSON array held in TEXT (a column or a parameter), as a FROM item whose
# column `value` holds each element (text for the string arrays the store keeps).
JSON_VALUES = {SQLITE: "json_each({})",
               POSTGRESQL: "jsonb_array_elements_text(CAST({} AS jsonb)) AS json_values(value)"}


class StoreError(Exception):
    """The store cannot do what was asked."""


class UnknownNode(StoreError):
    """No node with that id is registered."""


class UnknownCommand(StoreError):
    """No command with that id exists for the node."""


class DuplicateName(StoreError):
    """A user or token with that name already exists."""


class AlreadyRegistered(StoreError):
    """The node already has active credentials (rotate or revoke them instead)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer fleet than this one."""


class BadFilter(StoreError, ValueError):
    """A node list filter or sort that does not exist."""


class UnknownAlert(StoreError):
    """No alert with that id exists."""


class AlertResolved(StoreError):
    """The alert is already resolved; it cannot be acknowledged or resolved again."""


class UnknownRelease(StoreError):
    """No release with that version is stored."""


class UnknownRollout(StoreError):
    """No rollout with that id exists."""


NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def valid_node_id(node_id: str) -> bool:
    """True if node_id matches [a-z0-9-]{1,32} (the MQTT topic segment of a node)."""
    return 0 < len(node_id) <= 32 and NODE_ID_CHARS.issuperset(node_id)


def is_url(target) -> bool:
    """True when target names a PostgreSQL database (a URL), not a SQLite file."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def describe(target) -> str:
    """The database named by a path or URL, for logs: a URL without its password."""
    if not is_url(target):
        return str(target)
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", target)


# --- SQLite -------------------------------------------------------------------------------------


class SqliteConnection(sqlite3.Connection):
    """sqlite3's connection, told which dialect it speaks (domain modules pick SQL by it)."""

    dialect = SQLITE


class SqliteDatabase(sqlite_utils.Database):
    """sqlite-utils' Database on a SqliteConnection."""

    dialect = SQLITE


SQLITE_WAIT = 30  # s a connection waits for another's lock before it answers 'locked'


def _use_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (kept in the file: only a new file changes)."""
    # Two processes opening a new file at once (two web processes started together) both try to
    # change its mode. SQLite then answers one of them 'database is locked' at once, without
    # waiting: its busy handler is skipped where waiting could deadlock. That one tries again.
    deadline = time.monotonic() + SQLITE_WAIT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.02)


def _connect_sqlite(path) -> SqliteDatabase:
    path = private_file(path)  # it holds AppKeys and password hashes
    # isolation_level=None: sqlite3 must not open transactions behind our back, because the
    # ingest worker wants exactly one BEGIN IMMEDIATE ... COMMIT per batch.
    conn = sqlite3.connect(str(path), timeout=SQLITE_WAIT, isolation_level=None,
                           check_same_thread=False, factory=SqliteConnection)
    _use_wal(conn)
    # NORMAL in WAL mode survives a process crash; only a power cut can lose the last commits.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={SQLITE_WAIT * 1000}")
    return SqliteDatabase(conn)


# --- PostgreSQL ---------------------------------------------------------------------------------

# Placeholders outside quoted text: `?`, `:name` (not the `::` of a cast), and a bare `%`, which
# psycopg would read as the start of one of its own. SQLite's `INDEXED BY index` is a planner
# hint with no meaning for the result; PostgreSQL has no hints, so it is dropped.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|::|\?|:([A-Za-z_]\w*)|%|\s+INDEXED BY \w+")


@lru_cache(maxsize=1024)
def to_psycopg(sql: str, binary: bool = False) -> str:
    """A statement with sqlite3 placeholders (`?`, `:name`) rewritten for psycopg; with binary,
    each `?` becomes `%b` (the value is sent in PostgreSQL's binary format)."""

    def swap(m):
        text = m.group(0)
        if text == "?":
            return "%b" if binary else "%s"
        if text == "%":
            return "%%"
        if m.group(1):
            return f"%({m.group(1)})s"
        if text.lstrip().startswith("INDEXED BY"):
            return ""
        return text.replace("%", "%%")  # quoted text (psycopg reads % even there) or a cast

    return _TOKENS.sub(swap, sql)


class PgConnection:
    """A psycopg connection that takes the store's statements as sqlite3 does (tuple rows)."""

    dialect = POSTGRESQL

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, args=()):
        cur = self.raw.cursor()
        # Always with args, even (): psycopg then turns every %% back into %.
        cur.execute(to_psycopg(sql), args)
        return cur

    def execute_binary(self, sql: str, args=()):
        """execute(), with the `?` values sent in binary format: for the ingest's arrays of
        thousands of values, which psycopg's text format dumps 2.5-3.5x slower (it checks every
        element for quoting): ~45 % of the client's time storing a batch (docs/benchmarks.md)."""
        cur = self.raw.cursor()
        cur.execute(to_psycopg(sql, binary=True), args)
        return cur

    def executemany(self, sql: str, rows):
        cur = self.raw.cursor()
        cur.executemany(to_psycopg(sql), rows)
        return cur

    def copy_rows(self, table: str, columns: tuple, types: tuple, rows) -> None:
        """Append rows to table with COPY in binary format; types are the columns' PostgreSQL
        type names, in the order of columns.

        For the ingest's readings: against one INSERT of unnest() arrays, the client skips
        building the arrays (psycopg writes each row in C) and the server inserts pages of rows
        at a time; ~1 us less client time and ~0.7 us less server time per row
        (docs/benchmarks.md). COPY cannot run in pipeline mode, nor add ON CONFLICT, and needs
        its own round trip: a table only appended to, written in large batches.
        """
        cur = self.raw.cursor()
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            write = copy.write_row
            for row in rows:
                write(row)

    def close(self):
        self.raw.close()


class PgDatabase:
    """The PostgreSQL twin of sqlite-utils' Database, as far as the store uses it."""

    dialect = POSTGRESQL

    def __init__(self, raw, url: str):
        self.conn = PgConnection(raw)
        self.url = url

    def execute(self, sql: str, args=()):
        return self.conn.execute(sql, args)

    def close(self) -> None:
        """As sqlite-utils' Database.close (the provider worker calls it)."""
        self.conn.close()

    def query(self, sql: str, args=()):
        """Rows as dicts, like sqlite-utils' Database.query."""
        from psycopg.rows import dict_row

        with self.conn.raw.cursor(row_factory=dict_row) as cur:
            cur.execute(to_psycopg(sql), args)
            yield from cur

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " ORDER BY tablename")]


def _pg_types(conn) -> None:
    """Adapt values the way the store's SQLite code expects them back and forth."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.postgres import types

    class BoolAsInteger(Dumper):
        # Flags are INTEGER 0/1 columns in both dialects; Python code passes True/False.
        oid = types["int8"].oid

        def dump(self, obj):
            return b"1" if obj else b"0"

    class NumericAsNumber(Loader):
        # sum() and avg() of integers are numeric in PostgreSQL; SQLite gives int or float.
        def load(self, data):
            text = bytes(data)
            return int(text) if text.lstrip(b"-").isdigit() else float(text)

    conn.adapters.register_dumper(bool, BoolAsInteger)
    conn.adapters.register_loader("numeric", NumericAsNumber)


def _connect_postgresql(url: str) -> PgDatabase:
    import psycopg

    try:
        # autocommit: like the SQLite connection, every write is an explicit transaction().
        raw = psycopg.connect(url, autocommit=True, connect_timeout=30)
    except psycopg.OperationalError as e:
        raise StoreError(f"cannot connect to {describe(url)}: {str(e).strip()}") from None
    _pg_types(raw)
    return PgDatabase(raw, url)


class PgPool:
    """A process's idle PostgreSQL connections, each lent to one user at a time (the web's
    requests), so a request does not pay for a new server backend.

    A new connection costs ~10 ms (a forked backend, authentication), and the backend's first
    statements more again while it loads the catalog; every page paid both
    (tests/bench/bench_pg_web.py). take() lends an idle connection (or opens one), give() takes
    it back: only when it is idle outside a transaction; a broken or busy one is closed. One
    idle longer than `check_after` s is tested with a round trip first (the server may have
    restarted). Session state does not outlive a loan: the store keeps none between requests
    (exclusive() lets go of its advisory lock; streams open their own connection), and each
    loan gets a fresh wrapper, so a scope set on one request's connection is not the next's.
    """

    def __init__(self, url: str, keep: int = 8, check_after: float = 5.0):
        self.url, self.keep, self.check_after = url, keep, check_after
        self._idle: list = []  # (raw connection, when it came back)
        self._inherited: list = []  # a forked child's copies of its parent's connections
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self) -> "PgDatabase":
        """A connection of this pool's database (autocommit, as connect() gives)."""
        import psycopg

        while True:
            with self._lock:
                if self._pid != os.getpid():
                    # A forked child shares its parent's sockets: it must neither use nor close
                    # them (closing says goodbye to the server for the parent), so they stay
                    # referenced here, never finalised, and the child opens its own.
                    self._inherited += [raw for raw, _since in self._idle]
                    self._idle, self._pid = [], os.getpid()
                raw, since = self._idle.pop() if self._idle else (None, 0.0)
            if raw is None:
                db = _connect_postgresql(self.url)
                # psycopg prepares a statement run 5 times on one connection, and after 5 runs
                # the server may keep a generic plan: for the node search (ILIKE :like) that one
                # walks the primary key instead of the trigram index (60 ms against 0.4). A
                # connection per request never got there; a lent one would, so none is prepared.
                db.conn.raw.prepare_threshold = None
                return db
            if time.monotonic() - since > self.check_after:
                try:
                    raw.execute("SELECT 1")
                except psycopg.Error:
                    raw.close()
                    continue
            return PgDatabase(raw, self.url)

    def give(self, db: "PgDatabase") -> None:
        """Take a connection back (or close it: broken, inside a transaction, or enough idle)."""
        from psycopg.pq import TransactionStatus

        raw = db.conn.raw
        with self._lock:
            if (not raw.closed and raw.info.transaction_status == TransactionStatus.IDLE
                    and self._pid == os.getpid() and len(self._idle) < self.keep):
                self._idle.append((raw, time.monotonic()))
                return
        raw.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for raw, _since in idle:
            raw.close()


# --- both ---------------------------------------------------------------------------------------

# The drivers' errors for a broken UNIQUE, NOT NULL or foreign key constraint (`except` takes both).
IntegrityError: tuple = (sqlite3.IntegrityError,)
try:
    import psycopg.errors

    IntegrityError = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)
except ImportError:  # pragma: no cover - psycopg is a pinned requirement
    pass

Database = SqliteDatabase | PgDatabase


def connect(target) -> Database:
    """Open the fleet database a path (SQLite) or a postgresql:// URL names; autocommit."""
    if is_url(target):
        return _connect_postgresql(target)
    return _connect_sqlite(target)


def close(db: Database) -> None:
    """Close a connection opened by connect()."""
    db.conn.close()


@contextmanager
def transaction(db: Database):
    """One write transaction: commit on success, roll back on any error."""
    conn = db.conn
    # SQLite: IMMEDIATE takes the write lock now, so two writers queue instead of deadlocking.
    conn.execute("BEGIN IMMEDIATE" if db.dialect == SQLITE else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

def first(db: Database, sql: str, args=()) -> dict | None:
    """The first row a query returns, as a dict, or None if it returns none."""
    found = list(db.query(sql, args))
    return found[0] if found else None
