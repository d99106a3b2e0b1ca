"""Two ingest workers storing batches of the same nodes and the same frames at once on PostgreSQL:
no deadlock, every frame and reading stored once (the locking order in store_batch).

Always on a real PostgreSQL (the run's throwaway cluster), whatever --backend is: SQLite has one
writer at a time and cannot show it.
"""

import threading

import pytest
from polylink import proto

from fleet.store import telemetry as telemetry_store
from fleet.store.base import transaction
from fleet.store.migrate import open_db
from fleet.store.telemetry import Batch

NODES = [f"n{i}" for i in range(10)]
ROUNDS = 20


@pytest.fixture
def pg_url(pg_cluster):
    name = pg_cluster.fresh()
    yield pg_cluster.url(name)
    pg_cluster.drop(name)


PER_ROUND = 50  # frames of each node in a batch: long enough inserts to overlap


def batch(round_no: int, order) -> Batch:
    b = Batch()
    b.new_nodes = [(n, "mqtt", 1.0) for n in NODES]
    frames = [(n, round_no * PER_ROUND + k) for n in NODES for k in range(PER_ROUND)]
    for n, seq in (frames if order == NODES else frames[::-1]):
        b.frames.append((n, seq, proto.TELEMETRY, 1000.0 + seq, None, "mqtt",
                         [(0, 0, 20.0 + seq), (2, 0, 3.5)]))
        b.touch[n] = (1000.0 + seq, "mqtt", seq)
    return b


def test_two_workers_with_the_same_frames_in_opposite_orders_neither_deadlock_nor_duplicate(
        pg_url):
    # A redelivery after a lost ack can hand the same frames to both workers of a shared
    # subscription, in any order; here every batch of one is the other's, reversed.
    start = threading.Barrier(2)
    errors, new = [], []

    def worker(order):
        db = open_db(pg_url)
        try:
            for r in range(ROUNDS):
                start.wait(10)
                new.append(telemetry_store.store_batch(
                    db, batch(r, order), proto.TELEMETRY, proto.STATUS, proto.EVENT,
                    proto.RESULT, proto.OTA_UP))
        except Exception as e:  # noqa: BLE001 - reported below, with the other thread's
            errors.append(e)
            start.abort()
        finally:
            db.conn.close()

    threads = [threading.Thread(target=worker, args=(o,)) for o in (NODES, NODES[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    total = len(NODES) * ROUNDS * PER_ROUND
    assert sum(new) == total, "each frame new to exactly one worker"
    db = open_db(pg_url)
    try:
        frames = db.conn.execute("SELECT count(*), count(DISTINCT (node_id, seq)) FROM frames")
        assert frames.fetchone() == (total, total)
        readings = db.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        assert readings == 2 * total
        assert db.conn.execute("SELECT min(up_seq), max(battery) FROM nodes").fetchone() == (
            ROUNDS * PER_ROUND - 1, 3.5)
    finally:
        db.conn.close()


MANY = [f"m{i:04d}" for i in range(1000)]


def contacts(round_no: int, order: list, worker: int, offline=None) -> Batch:
    """One frame of each node in order, frames of their own (no key shared with the other
    worker's batch, which would make one batch wait for the other's commit before it locks any
    node): the two batches lock their nodes side by side."""
    b = Batch()
    if offline:
        # A node the batch changes without a contact (its conn "0"): another statement updating
        # node rows, whose own order would deadlock against the contacts' unless every node row
        # is locked in one order before any is updated (_lock_nodes).
        b.conn_state[offline] = 0
    seq = round_no * 2 + worker
    for n in order:
        # No readings: their latest values' upsert, in key order, would serialize the batches
        # before their node updates and hide the order of those.
        b.frames.append((n, seq, proto.TELEMETRY, 1000.0 + seq, None, "mqtt", []))
        b.touch[n] = (1000.0 + seq, "mqtt", seq)
    return b


@pytest.mark.parametrize("offline", [None, "m0500x"],
                         ids=["contacts only", "one batch marks a node offline"])
def test_two_workers_locking_the_same_nodes_in_opposite_orders_do_not_deadlock(pg_url, offline):
    db = open_db(pg_url)
    with transaction(db) as conn:
        conn.executemany("INSERT INTO nodes (id, provider, created) VALUES (?, 'mqtt', 0)",
                         [(n,) for n in MANY + [offline or "spare"]])
    db.conn.close()
    start = threading.Barrier(2)
    errors = []

    def worker(number, order):
        db = open_db(pg_url)
        try:
            for r in range(ROUNDS):
                start.wait(10)
                telemetry_store.store_batch(
                    db, contacts(r, order, number, offline if number else None),
                    proto.TELEMETRY, proto.STATUS, proto.EVENT, proto.RESULT, proto.OTA_UP)
        except Exception as e:  # noqa: BLE001 - reported below, with the other thread's
            errors.append(e)
            start.abort()
        finally:
            db.conn.close()

    threads = [threading.Thread(target=worker, args=a) for a in ((0, MANY), (1, MANY[::-1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    db = open_db(pg_url)
    try:
        got = db.conn.execute("SELECT count(*), min(up_seq), max(up_seq) FROM nodes"
                              " WHERE id LIKE 'm____'").fetchone()
        assert tuple(got) == (len(MANY), 2 * ROUNDS - 1, 2 * ROUNDS - 1)
        assert db.conn.execute("SELECT count(*) FROM frames").fetchone()[0] == (
            2 * ROUNDS * len(MANY))
    finally:
        db.conn.close()
