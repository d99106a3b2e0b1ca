"""PostgreSQL's node search index answers the search and nothing else (migration 0037).

Always on a real PostgreSQL (the run's throwaway cluster), whatever --backend is: the index and
the plans exist only there.
"""

import time

import pytest

from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import transaction
from fleet.store.migrate import open_db
from fleet.store.telemetry import Batch


@pytest.fixture
def pg(pg_cluster):
    name = pg_cluster.fresh()
    db = open_db(pg_cluster.url(name))
    with transaction(db) as conn:
        conn.executemany(
            "INSERT INTO nodes (id, name, location, provider, created) VALUES (?, ?, ?, 'mqtt', 0)",
            [(f"node-{i}", f"Sensor {i}", "Main Street 5" if i % 100 == 7 else f"Park {i}")
             for i in range(3000)])
    db.conn.execute("ANALYZE nodes")
    yield db
    db.conn.close()
    pg_cluster.drop(name)


def plan(db, sql, args=()) -> str:
    return "\n".join(r[0] for r in db.conn.execute("EXPLAIN " + sql, args))


def test_the_search_reads_the_trigram_index(pg):
    where, args = node_store._node_where(pg, {"q": "MAIN st"}, time.time(), "postgresql")
    # 3,000 nodes are few enough to read whole; without that choice the plan shows whether the
    # index can answer the search's expressions at all.
    pg.conn.execute("SET enable_seqscan = off")
    assert "nodes_search" in plan(pg, f"SELECT id FROM nodes WHERE {where}", args)
    pg.conn.execute("RESET enable_seqscan")
    found = node_store.matching_node_ids(pg, {"q": "MAIN st"})
    assert sorted(found) == sorted(f"node-{i}" for i in range(7, 3000, 100)), "case ignored"
    assert node_store.matching_node_ids(pg, {"q": "sensor 1234"}) == ["node-1234"]
    assert node_store.matching_node_ids(pg, {"q": "%"}) == [], "a % in the term is a %"


def test_equality_on_ids_takes_the_primary_key_not_the_search_index(pg):
    # Before 0037 the planner answered `id = ANY(...)` from the trigram index and read its whole
    # pending list: the ingest's lock on a batch's nodes grew to hundreds of ms.
    ids = [f"node-{i}" for i in range(0, 3000, 30)]
    assert "nodes_search" not in plan(pg, "SELECT 1 FROM nodes WHERE id = ANY(?)", (ids,))
    assert "nodes_search" not in plan(pg, "SELECT 1 FROM nodes WHERE id IN ("
                                          + ", ".join("?" * len(ids)) + ")", ids)
    # and the ingest's own statements over those nodes still work
    batch = Batch()
    batch.touch = {i: (1.0, "mqtt", 1) for i in ids}
    telemetry_store.store_batch(pg, batch, 0, 1, 2, 3)
    assert pg.conn.execute("SELECT count(*) FROM nodes WHERE last_seen = 1.0").fetchone()[0] == 100
