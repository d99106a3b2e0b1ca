"""PostgreSQL's readings in day partitions: made ahead, dropped by retention, pruned by queries.

These tests always run on a real PostgreSQL (the run's throwaway cluster), whatever --backend is:
partitions exist only there.
"""

import pytest

from fleet.store import telemetry as telemetry_store
from fleet.store import upkeep as upkeep_store
from fleet.store.base import transaction
from fleet.store.migrate import open_db

DAY = upkeep_store.DAY
NOW = 1_800_000_000.0  # 2027-01-15, a fixed day so names are known


@pytest.fixture
def pg(pg_cluster):
    name = pg_cluster.fresh()
    db = open_db(pg_cluster.url(name))
    yield db
    db.conn.close()
    pg_cluster.drop(name)


def add_reading(db, t, node="n1"):
    with transaction(db) as conn:
        conn.execute("INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, ?, 0, 0, 1.5)",
                     (node, t))
        conn.execute("INSERT INTO latest (node_id, qid, inst, t, value) VALUES (?, 0, 0, ?, 1.5)"
                     " ON CONFLICT DO NOTHING", (node, t))


def partition_of(db, t) -> str:
    return db.conn.execute("SELECT tableoid::regclass::text FROM readings WHERE t = ?",
                           (t,)).fetchone()[0]


def test_partitions_are_made_ahead_and_rows_land_in_their_day(pg):
    made = upkeep_store.add_partitions(pg, NOW - 3 * DAY)
    assert made == ["readings_p20270112", "readings_p20270113", "readings_p20270114",
                    "readings_p20270115"]
    assert upkeep_store.add_partitions(pg, NOW - 3 * DAY) == []  # twice: nothing new
    add_reading(pg, NOW - 2 * DAY)
    add_reading(pg, NOW + 5 * DAY)  # a day without a partition
    assert partition_of(pg, NOW - 2 * DAY) == "readings_p20270113"
    assert partition_of(pg, NOW + 5 * DAY) == "readings_default"
    # That day now holds rows in the default partition: it gets no partition, nothing is lost.
    assert "readings_p20270120" not in upkeep_store.add_partitions(pg, NOW + 5 * DAY, ahead=0)
    assert telemetry_store.count_readings(pg) == 2


def test_retention_drops_whole_days_and_deletes_the_rest_by_row(pg):
    upkeep_store.add_partitions(pg, NOW - 3 * DAY)
    day0 = (NOW - 3 * DAY) // DAY * DAY  # start of 2027-01-12
    for k in range(4):
        add_reading(pg, day0 + k * DAY + 60)
        add_reading(pg, day0 + k * DAY + 120, node="n2")
    add_reading(pg, day0 - 10 * DAY)  # an old row in the default partition
    before = day0 + 2 * DAY + 90  # keeps day 2 from 90 s on, and day 3
    assert upkeep_store.prune_old(pg, "readings", before) == 6
    left = sorted(r[0] for r in pg.conn.execute("SELECT t FROM readings"))
    assert left == [day0 + 2 * DAY + 120, day0 + 3 * DAY + 60, day0 + 3 * DAY + 120]
    names = set(upkeep_store.readings_partitions(pg))
    assert "readings_p20270112" not in names and "readings_p20270113" not in names
    assert "readings_p20270114" in names  # partly kept: its rows went one by one


def test_a_time_range_query_reads_only_its_days(pg):
    upkeep_store.add_partitions(pg, NOW - 3 * DAY)
    plan = "\n".join(r[0] for r in pg.conn.execute(
        "EXPLAIN SELECT t FROM readings WHERE node_id = 'n1' AND qid = 0"
        f" AND t >= {NOW - DAY} AND t < {NOW - DAY + 3600}"))
    assert "readings_p20270114" in plan
    for other in ("readings_p20270112", "readings_p20270113", "readings_p20270115"):
        assert other not in plan
