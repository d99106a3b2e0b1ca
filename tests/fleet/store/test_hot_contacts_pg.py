"""PostgreSQL updates a node's contact and its latest values in place of its indexes (HOT), so a
frame costs no index entry in the eleven indexes of `nodes` (migration 0039).

Always on a real PostgreSQL (the run's throwaway cluster), whatever --backend is: HOT updates
exist only there.
"""

import re

import pytest
from polylink import proto

from fleet.store import telemetry as telemetry_store
from fleet.store.base import connect
from fleet.store.migrate import open_db
from fleet.store.telemetry import Batch

NODES = 50
# What an ingest batch writes into rows that already exist: a contact (store_batch's UPDATE of
# nodes) and the upsert of each newest reading.
WRITTEN = {"nodes": ("last_seen", "online", "up_seq", "battery"), "latest": ("t", "value")}


@pytest.fixture
def pg(pg_cluster):
    name = pg_cluster.fresh()
    db = open_db(pg_cluster.url(name))
    yield db, pg_cluster.url(name)
    db.conn.close()
    pg_cluster.drop(name)


def index_definitions(db, table: str) -> list[str]:
    return [r[0] for r in db.conn.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = ?::regclass",
        (table,))]


def test_no_index_holds_a_column_an_ingest_batch_rewrites(pg):
    db, _url = pg
    for table, columns in WRITTEN.items():
        definitions = index_definitions(db, table)
        assert definitions, table
        for definition in definitions:
            # The index's column list (and a partial index's WHERE), the table name left out.
            keys = definition.split(" USING ", 1)[1]
            held = [c for c in columns if re.search(rf"\b{c}\b", keys)]
            assert not held, f"{definition} holds {held}: updating them cannot be HOT"


def store(db, seq: int, battery: float) -> None:
    batch = Batch()
    batch.new_nodes = [(f"n{i}", "mqtt", 1.0) for i in range(NODES)] if seq == 1 else []
    at = 1_800_000_000.0 + seq
    batch.frames = [(f"n{i}", seq, proto.TELEMETRY, at, None, "mqtt",
                     [(0, 0, 20.0 + seq), (2, 0, battery)]) for i in range(NODES)]
    batch.touch = {f"n{i}": (at, "mqtt", seq) for i in range(NODES)}
    assert telemetry_store.store_batch(db, batch, proto.TELEMETRY, proto.STATUS, proto.EVENT,
                                       proto.RESULT, proto.OTA_UP) == NODES


def updates(url: str, table: str) -> tuple[int, int]:
    """(updates, HOT updates) of table, as the server's statistics count them."""
    db = connect(url)
    try:
        return tuple(db.conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = ?",
            (table,)).fetchone())
    finally:
        db.conn.close()


def test_contacts_and_latest_values_are_updated_hot(pg):
    db, url = pg
    store(db, 1, 3.9)  # the nodes and their latest rows are inserted
    # A backend hands its counts to the statistics when it goes idle, at most once a second
    # unless told to flush: then the next idle moment does it, before the answer comes back.
    db.conn.execute("SELECT pg_stat_force_next_flush()")
    before = {table: updates(url, table) for table in WRITTEN}
    for seq in range(2, 5):
        store(db, seq, 3.9 - seq / 100)  # every contact a new last_seen, up_seq and battery
    db.conn.execute("SELECT pg_stat_force_next_flush()")
    for table in WRITTEN:
        upd, hot = (now - then for now, then in zip(updates(url, table), before[table],
                                                      strict=True))
        # nodes: a contact each batch (the conn "online" flag is not in these batches); latest:
        # two quantities a node.
        assert upd == 3 * NODES * (2 if table == "latest" else 1), (table, upd)
        # Nearly all: a page whose room is used up by versions not yet pruned takes the next
        # one elsewhere, a normal update. Without migration 0039 none of the nodes' was HOT.
        assert hot >= 0.9 * upd, f"{table}: {upd - hot} of {upd} updates were not HOT"
    row = db.conn.execute("SELECT last_seen, up_seq, battery FROM nodes WHERE id = 'n7'").fetchone()
    assert tuple(row) == (1_800_000_004.0, 4, 3.86)
