"""PostgreSQL finds readings in commit order through reading_commits (migration 0038): a row per
transaction that stored readings, with a span of ids holding them, filled by statement triggers.

These tests write readings the ways the fleet does (COPY, INSERT, ids of their own) on a real
PostgreSQL (the test cluster, whichever backend this run uses) and check that a destination's
cursor gets every reading once, in commit order, however the spans interleave and however small
its reads are.
"""

import time

import pytest

from fleet.store import exports as export_store
from fleet.store import telemetry as telemetry_store
from fleet.store import upkeep as upkeep_store
from fleet.store.base import transaction
from fleet.store.migrate import open_db


@pytest.fixture
def pg_db(pg_cluster):
    """A store of its own on the test cluster."""
    name = pg_cluster.fresh()
    db = open_db(pg_cluster.url(name))
    yield db
    db.close()
    pg_cluster.drop(name)


def _insert(conn, node: str, values: list[float]) -> None:
    conn.executemany("INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, 1.0, 0, 0, ?)",
                     [(node, v) for v in values])


def _drain(db, at=export_store.START, limit=3) -> tuple[list[tuple], tuple[int, int]]:
    got = []
    while True:
        readings, _events, at, _e = export_store.fetch_after(db, at, export_store.START, [], [],
                                                             limit)
        got += [(r[1], r[5]) for r in readings]
        if not readings:
            # An empty read may still move the cursor (a span of other transactions' ids): only
            # a read that neither finds nor moves is the end.
            again = export_store.fetch_after(db, at, export_store.START, [], [], limit)
            if not again[0] and again[2] == at:
                return got, at


def test_every_writer_is_logged_and_read_once_in_commit_order(pg_cluster):
    name = pg_cluster.fresh()
    first, second, reader = (open_db(pg_cluster.url(name)) for _ in range(3))
    try:
        # Two transactions take ids turn about: each one's span holds the other's rows.
        first.conn.execute("BEGIN")
        second.conn.execute("BEGIN")
        for i in range(4):
            _insert(first.conn, "a", [i])
            _insert(second.conn, "b", [10 + i])
        second.conn.execute("COMMIT")  # b commits first but has the larger xid
        first.conn.execute("COMMIT")
        # The ingest's COPY, many readings in one statement.
        with transaction(first) as conn:
            conn.copy_rows("readings", ("node_id", "t", "qid", "inst", "value"),
                           ("text", "float8", "int8", "int8", "float8"),
                           [("c", 2.0, 0, 0, float(20 + i)) for i in range(7)])
        spans = reader.conn.execute(
            "SELECT first_id, last_id FROM reading_commits ORDER BY xact").fetchall()
        # a took ids 1, 3, 5, 7 and b 2, 4, 6, 8: each span holds the other's rows too.
        assert spans[:2] == [(1, 7), (1, 8)] and len(spans) == 3

        got, at = _drain(reader)
        a, b, c = ([("a", float(i)) for i in range(4)], [("b", float(10 + i)) for i in range(4)],
                   [("c", float(20 + i)) for i in range(7)])
        assert got == a + b + c  # xid order: a's transaction began writing first
        assert export_store.backlog(reader, at, [], []) == 0
        assert export_store.backlog(reader, export_store.START, [], []) == 15
        # Halfway through a's rows: the rest of a, then b and c.
        assert export_store.backlog(reader, (at_a := _position_after(reader, 2)), [], []) == 13
        assert _drain(reader, at_a)[0] == a[2:] + b + c
    finally:
        for db in (first, second, reader):
            db.close()
        pg_cluster.drop(name)


def _position_after(db, n: int) -> tuple[int, int]:
    readings, _e, at, _ea = export_store.fetch_after(db, export_store.START, export_store.START,
                                                     [], [], n)
    assert len(readings) == n
    return at


def test_a_span_wider_than_a_read_is_walked_in_pieces(pg_db):
    """Rows with ids of their own (fleet db copy, rows older than 0038) are one span of all their
    ids, gaps included: reads look at a bounded piece of it and still get every row once."""
    db = pg_db
    with transaction(db) as conn:
        # Every 500th id, as after retention or a copied store with deleted rows.
        conn.executemany("INSERT INTO readings (id, xact, node_id, t, qid, inst, value)"
                         " VALUES (?, '0', 'old', 1.0, 0, 0, ?)",
                         [(500 * i + 1, float(i)) for i in range(40)])
        conn.execute(export_store.LOG_READING_COMMITS)
        conn.execute("SELECT setval('readings_id_seq', 50000)")
    with transaction(db) as conn:
        _insert(conn, "new", [1.0])
    assert db.conn.execute("SELECT first_id, last_id FROM reading_commits WHERE xact = '0'"
                           ).fetchone() == (1, 19501)
    reads = []
    at = export_store.START
    while True:
        readings, _e, nxt, _ea = export_store.fetch_after(db, at, export_store.START, [], [], 5)
        if not readings and nxt == at:
            break
        reads.append(len(readings))
        at = nxt
    got, _ = _drain(db)
    assert got == [("old", float(i)) for i in range(40)] + [("new", 1.0)]
    # 5 rows asked for: at most 20 ids looked at per read and 16 reads per fetch (320 ids),
    # one row in 500 ids, so no fetch found more than one old row (the last may find the new
    # one too). Reading all of the span at once would scan every id of it.
    assert max(reads) <= 2 and len(reads) >= 40


def test_the_ingest_batch_is_logged_by_its_copy(pg_db):
    db = pg_db
    batch = telemetry_store.Batch()
    now = time.time()
    batch.new_nodes.append(("n1", "mqtt", now))
    batch.frames += [("n1", seq, 1, now, None, "mqtt", [(0, 0, float(seq)), (1, 0, 2.0)])
                     for seq in range(1, 6)]
    batch.touch["n1"] = (now, "mqtt", 5)
    assert telemetry_store.store_batch(db, batch, 1, 2, 3, 4, 5) == 5
    got, _ = _drain(db, limit=4)
    assert sorted(got) == sorted([("n1", float(s)) for s in range(1, 6)] + [("n1", 2.0)] * 5)


def test_retention_drops_the_log_of_old_commits(pg_db):
    db = pg_db
    with transaction(db) as conn:
        _insert(conn, "a", [1.0])
    day = upkeep_store.DAY
    db.conn.execute("UPDATE reading_commits SET at = at - 10 * ?", (day,))
    with transaction(db) as conn:
        _insert(conn, "a", [2.0])
    upkeep_store.prune_old(db, "readings", time.time() - 5 * day)
    assert db.conn.execute("SELECT count(*) FROM reading_commits").fetchone()[0] == 1
    # The first transaction is made to look 10 days old while its reading is not: with its
    # log gone the exports no longer see that reading (real ones go with their day).
    assert _drain(db)[0] == [("a", 2.0)]
