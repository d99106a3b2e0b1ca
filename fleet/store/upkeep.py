"""The periodic work's own state: when each task last ran, and pruning old rows by age."""

import calendar
import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager

from .base import POSTGRESQL, transaction


def mark_upkeep(db, task: str, at: float, detail=None) -> None:
    """Record that a periodic task (alerts, prune, broker) ran at `at`."""
    with transaction(db) as conn:
        conn.execute("INSERT INTO upkeep (task, at, detail) VALUES (?, ?, ?) ON CONFLICT (task)"
                     " DO UPDATE SET at = excluded.at, detail = excluded.detail",
                     (task, at, None if detail is None else json.dumps(detail)))


def upkeep_state(db) -> dict[str, dict]:
    """{task: {"at": time, "detail": ...}} of the periodic tasks that ever ran."""
    return {r[0]: {"at": r[1], "detail": json.loads(r[2]) if r[2] else None}
            for r in db.conn.execute("SELECT task, at, detail FROM upkeep")}


# How each table is pruned by age: the groups to walk (None: the whole table at once) and the
# DELETE for one group, along an index whose prefix is the group and then the time, so each
# statement reads only rows it deletes. Readings are indexed (node_id, qid, t): walking the
# (node, quantity) pairs `latest` holds avoids scanning the biggest table.
_PRUNE = {
    "status_log": (None, "SELECT rowid FROM status_log INDEXED BY status_log_t_boots WHERE t < ?"),
    "readings": ("SELECT DISTINCT node_id, qid FROM latest",
                 "SELECT rowid FROM readings INDEXED BY readings_node_qid_t"
                 " WHERE node_id = ? AND qid = ? AND t < ?"),
    "receptions": ("SELECT id FROM nodes", "SELECT rowid FROM receptions INDEXED BY receptions_node"
                                           " WHERE node_id = ? AND received_at < ?"),
    # The (node, name, time) of SenML records taken in: kept as long as the readings they made.
    "senml_seen": ("SELECT id FROM nodes", "SELECT rowid FROM senml_seen INDEXED BY"
                                           " senml_seen_node_t WHERE node_id = ? AND t < ?"),
    "events": ("SELECT id FROM nodes",
               "SELECT rowid FROM events INDEXED BY events_node_t WHERE node_id = ? AND t < ?"),
    "bad_frames": (None, "SELECT rowid FROM bad_frames INDEXED BY bad_frames_time"
                         " WHERE received_at < ?"),
    "provider_downlinks": ("SELECT id FROM nodes",
                           "SELECT rowid FROM provider_downlinks INDEXED BY provider_downlinks_node"
                           " WHERE node_id = ? AND t < ?"),
}


def prune_old(db, table: str, before: float, chunk: int = 5000) -> int:
    """Delete a table's rows older than `before` in short transactions; the count deleted.

    Each transaction deletes at most `chunk` rows, so the ingest worker never waits long for the
    write lock; many small groups (nodes) share one transaction.

    PostgreSQL's readings go by whole UTC days: `before` is rounded down to its midnight, so the
    day partitions older than that are dropped and no row of a kept day is deleted one by one
    (up to a day more is kept than asked: at most READINGS_DAYS + 1 days). Only rows in
    readings_default (days that had no partition) are still deleted row by row. The count of
    dropped rows is PostgreSQL's estimate (see drop_partitions).
    """
    groups_sql, select = _PRUNE[table]
    total = 0
    if db.dialect == POSTGRESQL:
        if table == "readings":
            before = before // DAY * DAY
            total += drop_partitions(db, before)
            with transaction(db) as conn:
                # The exports' log of the transactions that stored readings (0038) goes with
                # them, a day later: a reading is seldom stored a day after its own time.
                conn.execute("DELETE FROM reading_commits WHERE at < ?", (before - DAY,))
            # Older rows can be left only in the default partition; it is empty unless days
            # came without a partition (or the store was partitioned with its rows in it, 0027).
            if db.conn.execute("SELECT NOT EXISTS (SELECT 1 FROM readings_default)"
                               ).fetchone()[0]:
                return total
            select = select.replace("FROM readings ", "FROM readings_default ")
            table = "readings_default"
        # The same walk by PostgreSQL's row address, which is unique within one partition only
        # (the INDEXED BY hints are dropped for PostgreSQL).
        select = select.replace("SELECT rowid", "SELECT tableoid, ctid")
        delete = f"DELETE FROM {table} WHERE (tableoid, ctid) IN ({select} LIMIT ?)"
    else:
        delete = f"DELETE FROM {table} WHERE rowid IN ({select} LIMIT ?)"
    groups = [tuple(g) for g in db.conn.execute(groups_sql)] if groups_sql else [()]
    while groups:
        with transaction(db) as conn:
            room = chunk
            while groups and room:
                n = conn.execute(delete, (*groups[-1], before, room)).rowcount
                total += n
                if n < room:
                    groups.pop()  # nothing older left in this group
                room -= n
    return total


# --- readings in day partitions (PostgreSQL) ----------------------------------------------------

DAY = 86400
PARTITIONS_AHEAD = 3  # days of partitions made before their readings arrive


def partition_name(day: int) -> str:
    """The partition of readings for UTC day number `day` (days since 1970): readings_pYYYYMMDD."""
    return "readings_p" + time.strftime("%Y%m%d", time.gmtime(day * DAY))


def readings_partitions(db) -> dict[str, int]:
    """{partition name: its UTC day number} of readings' day partitions (PostgreSQL)."""
    rows = db.conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'readings'::regclass AND c.relname LIKE 'readings_p%'").fetchall()
    return {name: calendar.timegm(time.strptime(name[10:], "%Y%m%d")) // DAY for (name,) in rows}


def add_partitions(db, now: float, ahead: int = PARTITIONS_AHEAD) -> list[str]:
    """PostgreSQL: make readings' partitions for today and `ahead` days on; the names made.

    Called by upkeep every round and by the ingest at start. A day whose readings already went to
    readings_default (no partition was made in time) gets none: they stay there, pruned by row.
    """
    if db.dialect != POSTGRESQL:
        return []
    import psycopg.errors

    have = readings_partitions(db)
    made = []
    first = int(now // DAY)
    for day in range(first, first + ahead + 1):
        name = partition_name(day)
        if name in have:
            continue
        try:
            with transaction(db) as conn:
                conn.execute(f"CREATE TABLE {name} PARTITION OF readings"
                             f" FOR VALUES FROM ({day * DAY}) TO ({(day + 1) * DAY})")
            made.append(name)
        except (psycopg.errors.DuplicateTable, psycopg.errors.CheckViolation):
            continue  # another worker made it first, or the default partition holds that day
    return made


def drop_partitions(db, before: float) -> int:
    """PostgreSQL: drop readings' day partitions that end at or before `before`; the rows they
    held, as PostgreSQL estimates them.

    The estimate is pg_class.reltuples, which autovacuum's ANALYZE keeps (a day's partition is
    analysed long before retention drops it); counting exactly read each partition whole first.
    A partition never analysed (reltuples -1: small, or autovacuum off) is counted exactly.
    """
    dropped = 0
    for name, day in sorted(readings_partitions(db).items(), key=lambda item: item[1]):
        if (day + 1) * DAY > before:
            continue
        with transaction(db) as conn:
            rows = conn.execute("SELECT reltuples FROM pg_class WHERE oid = CAST(? AS regclass)",
                                (name,)).fetchone()[0]
            if rows < 0:
                rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            dropped += int(rows)
            conn.execute(f"DROP TABLE {name}")
    return dropped


# --- work that runs once however many workers try it ---------------------------------------------

LEASE = 300.0  # s a SQLite lock row holds if its holder dies without letting go


def lock_key(name: str) -> int:
    """The PostgreSQL advisory lock key of a named lock (a stable signed 64-bit number)."""
    digest = hashlib.sha256(b"polylink:" + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def exclusive(db, name: str, lease: float = LEASE):
    """Yield True to the one worker that holds the lock `name` now, False to every other.

    PostgreSQL: a session advisory lock (let go when this returns, or when the worker's
    connection dies). SQLite: a row in `locks` with a lease, for a worker killed while holding it.
    """
    if db.dialect == POSTGRESQL:
        key = lock_key(name)
        got = db.conn.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]
        try:
            yield got
        finally:
            if got:
                db.conn.execute("SELECT pg_advisory_unlock(?)", (key,))
        return
    holder = f"{socket.gethostname()}:{os.getpid()}:{id(db)}"
    now = time.time()
    with transaction(db) as conn:
        got = conn.execute(
            "INSERT INTO locks (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
            " SET holder = excluded.holder, until = excluded.until WHERE locks.until < ?"
            " RETURNING holder", (name, holder, now + lease, now)).fetchone() is not None
    try:
        yield got
    finally:
        if got:
            with transaction(db) as conn:
                conn.execute("DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder))


class Held:
    """A named lock a long-running worker keeps for as long as it does the work it guards.

    exclusive() guards one round; this guards a standing duty (a provider's MQTT session, which
    only one worker may hold at a time). Call renew() every few seconds: True while this worker
    holds the lock (taking it when it is free), False while another does. PostgreSQL: a session
    advisory lock, let go at once when the worker's connection dies (SIGKILL included). SQLite:
    a `locks` row whose lease renew() extends; a dead holder's row expires after `lease` s.
    """

    def __init__(self, db, name: str, lease: float = 30.0):
        self.db, self.name, self.lease = db, name, lease
        self.held = False
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"

    def renew(self) -> bool:
        db = self.db
        if db.dialect == POSTGRESQL:
            if not self.held:  # pg_try_advisory_lock stacks: take it once, keep it
                self.held = db.conn.execute("SELECT pg_try_advisory_lock(?)",
                                            (lock_key(self.name),)).fetchone()[0]
            return self.held
        now = time.time()
        with transaction(db) as conn:
            self.held = conn.execute(
                "INSERT INTO locks (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET holder = excluded.holder, until = excluded.until"
                " WHERE locks.until < ? OR locks.holder = excluded.holder RETURNING holder",
                (self.name, self.holder, now + self.lease, now)).fetchone() is not None
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self.db.dialect == POSTGRESQL:
            self.db.conn.execute("SELECT pg_advisory_unlock(?)", (lock_key(self.name),))
            return
        with transaction(self.db) as conn:
            conn.execute("DELETE FROM locks WHERE name = ? AND holder = ?",
                         (self.name, self.holder))
