"""Connections, transactions and the store's errors; no Flask, no domain SQL.

The fleet runs on SQLite through sqlite-utils today. A second dialect (PostgreSQL, issue #15)
sits here: connect() is the one place that knows which database a path or URL names, and
transaction() the one place that opens and ends a write.
"""

import sqlite3
from contextlib import contextmanager

import sqlite_utils

from fleet.datadir import private_file

Database = sqlite_utils.Database
# The driver's error for a broken UNIQUE, NOT NULL or foreign key constraint.
IntegrityError = sqlite3.IntegrityError


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


def connect(path) -> Database:
    """Open the fleet database in WAL mode with autocommit; transactions are explicit."""
    path = private_file(path)  # it holds AppKeys and password hashes
    # isolation_level=None: sqlite3 must not open transactions behind our back, because the
    # ingest worker wants exactly one BEGIN IMMEDIATE ... COMMIT per batch.
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash; only a power cut can lose the last commits.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return sqlite_utils.Database(conn)


def close(db: Database) -> None:
    """Close a connection opened by connect()."""
    db.conn.close()


@contextmanager
def transaction(db: Database):
    """One write transaction: commit on success, roll back on any error."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db.conn
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")



def first(db: Database, sql: str, args=()) -> dict | None:
    """The first row a query returns, as a dict, or None if it returns none."""
    found = list(db.query(sql, args))
    return found[0] if found else None
