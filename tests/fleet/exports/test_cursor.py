"""The exports' durable cursor (fleet/store/exports.py) never steps over a row that commits late.

On PostgreSQL several ingest workers commit at once: a transaction can take a smaller id and
commit after another with a larger one. These tests hold such a transaction open on a second
connection of a real PostgreSQL (the test cluster, whichever backend this run uses) and check that
the cursor waits for it instead of skipping its row. SQLite lets one writer in at a time, so the
interleaving cannot happen there; its test checks that an open write is neither seen nor skipped.
"""

import time

from fleet.store import exports as export_store
from fleet.store import migrate
from fleet.store.base import connect, transaction
from fleet.store.migrate import open_db


def _reading(conn, node: str, t: float) -> int:
    """Insert one reading as the ingest does (the columns' defaults give id and transaction)."""
    conn.execute("INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, ?, 0, 0, 1.5)",
                 (node, t))
    if conn.dialect == "sqlite":
        return conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    return conn.execute("SELECT currval('readings_id_seq')").fetchone()[0]


def _event(conn, node: str, t: float) -> int:
    conn.execute("INSERT INTO events (node_id, t, received_at, code, value, text)"
                 " VALUES (?, ?, ?, 1, 0, 'boot')", (node, t, t))
    if conn.dialect == "sqlite":
        return conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    return conn.execute("SELECT currval(pg_get_serial_sequence('events', 'id'))").fetchone()[0]


class Destination:
    """What the export worker does with a cursor: fetch after it, deliver, advance it."""

    def __init__(self, db):
        self.db = db
        self.reading_at = self.event_at = export_store.START
        self.readings: list[str] = []
        self.events: list[str] = []

    def drain(self) -> None:
        while True:
            readings, events, self.reading_at, self.event_at = export_store.fetch_after(
                self.db, self.reading_at, self.event_at, [], [], limit=2)
            self.readings += [r[1] for r in readings]
            self.events += [e[1] for e in events]
            if not readings and not events:
                return


def test_a_row_committed_after_a_larger_id_is_delivered_once(pg_cluster):
    name = pg_cluster.fresh()
    late, early, reader = (open_db(pg_cluster.url(name)) for _ in range(3))
    try:
        with transaction(early) as conn:  # rows before the race: delivered as usual
            _reading(conn, "before", 1.0)
        dest = Destination(reader)
        dest.drain()
        assert dest.readings == ["before"]

        # The late transaction takes the smaller ids and stays open ...
        late.conn.execute("BEGIN")
        late_reading, late_event = _reading(late.conn, "late", 2.0), _event(late.conn, "late", 2.0)
        # ... while another takes larger ones and commits first.
        with transaction(early) as conn:
            early_reading = _reading(conn, "early", 3.0)
            early_event = _event(conn, "early", 3.0)
            _reading(conn, "early", 3.5)
        assert (late_reading, late_event) < (early_reading, early_event)  # the dangerous order

        dest.drain()  # by id alone the cursor would now stand past the late rows
        assert dest.readings == ["before"] and dest.events == []  # held back, not skipped
        # The early rows count as behind (stored, only not yet sure to be in order); the late
        # one is not stored until its transaction commits.
        assert export_store.backlog(reader, dest.reading_at, [], []) == 2

        late.conn.execute("COMMIT")
        dest.drain()
        # Every row exactly once, in commit order (the early transaction's xid is the larger).
        assert dest.readings == ["before", "late", "early", "early"]
        assert dest.events == ["late", "early"]
        assert export_store.backlog(reader, dest.reading_at, [], []) == 0
    finally:
        for db in (late, early, reader):
            db.close()
        pg_cluster.drop(name)


def test_a_rolled_back_transaction_does_not_hold_the_cursor(pg_cluster):
    name = pg_cluster.fresh()
    writer, reader = open_db(pg_cluster.url(name)), open_db(pg_cluster.url(name))
    try:
        writer.conn.execute("BEGIN")
        _reading(writer.conn, "gone", 1.0)
        writer.conn.execute("ROLLBACK")
        with transaction(writer) as conn:
            _reading(conn, "kept", 2.0)
        dest = Destination(reader)
        dest.drain()
        assert dest.readings == ["kept"]
    finally:
        writer.close()
        reader.close()
        pg_cluster.drop(name)


def test_sqlite_cursor_neither_sees_nor_skips_an_open_write(tmp_path):
    path = tmp_path / "fleet.db"
    writer, reader = open_db(path), open_db(path)
    try:
        with transaction(writer) as conn:
            _reading(conn, "before", 1.0)
        dest = Destination(reader)
        writer.conn.execute("BEGIN IMMEDIATE")
        _reading(writer.conn, "open", 2.0)
        dest.drain()
        assert dest.readings == ["before"]
        writer.conn.execute("COMMIT")
        dest.drain()
        assert dest.readings == ["before", "open"]
        assert dest.reading_at == (0, 2)  # SQLite's position: transaction part 0, the rowid
    finally:
        writer.close()
        reader.close()


def test_a_destination_started_at_the_end_gets_only_what_comes_later(db):
    with transaction(db) as conn:
        _reading(conn, "old", 1.0)
    export_store.save_destination(
        db, {"name": "late", "kind": "webhook", "url": "https://x.example/", "options": "{}",
             "nodes": "[]", "tags": "[]", "enabled": 1, "created": time.time()},
        keep_secret=False, start_at_end=True)
    row = export_store.get_destination(db, "late")
    dest = Destination(db)
    dest.reading_at, dest.event_at = row["reading_at"], row["event_at"]
    with transaction(db) as conn:
        _reading(conn, "new", 2.0)
    dest.drain()
    assert dest.readings == ["new"]


def test_postgresql_upgrade_gives_stored_readings_ids_before_every_new_one(pg_cluster):
    """Migration 0029 on a PostgreSQL store with readings (in a day partition and the default
    one) and a destination at the start: every stored reading gets an id, and all of them,
    then a reading stored after the upgrade, reach the destination once, in that order."""
    name = f"upgrade{time.monotonic_ns()}"
    pg_cluster.sql(f"CREATE DATABASE {name}")
    db = connect(pg_cluster.url(name))
    try:
        migrate.migrate(db, 28)
        db.conn.execute("CREATE TABLE readings_early PARTITION OF readings"
                        " FOR VALUES FROM (0) TO (100)")
        with transaction(db) as conn:
            conn.execute("INSERT INTO readings (node_id, t, qid, inst, value)"
                         " SELECT 'old', g, 0, 0, g FROM generate_series(1, 150) g")
            conn.execute("INSERT INTO export_destinations (name, kind, url, created)"
                         " VALUES ('city', 'webhook', 'https://x.example/', 0)")
            conn.execute("INSERT INTO export_cursors (destination) VALUES ('city')")
        assert migrate.migrate(db) == (28, migrate.SCHEMA_VERSION)
        with transaction(db) as conn:
            _reading(conn, "new", 50.0)
        row = export_store.get_destination(db, "city")
        dest = Destination(db)
        dest.reading_at = row["reading_at"]
        dest.drain()
        assert dest.readings == ["old"] * 150 + ["new"]
    finally:
        db.close()
        pg_cluster.sql(f"DROP DATABASE {name} WITH (FORCE)")
