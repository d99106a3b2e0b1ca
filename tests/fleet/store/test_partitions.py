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


def test_retention_drops_whole_days_up_to_the_midnight_before_the_cutoff(pg):
    upkeep_store.add_partitions(pg, NOW - 3 * DAY)
    day0 = (NOW - 3 * DAY) // DAY * DAY  # start of 2027-01-12
    for k in range(4):
        add_reading(pg, day0 + k * DAY + 60)
        add_reading(pg, day0 + k * DAY + 120, node="n2")
    add_reading(pg, day0 - 10 * DAY)  # an old row in the default partition
    before = day0 + 2 * DAY + 90  # in day 2: its midnight is the cutoff, the whole day stays
    assert upkeep_store.prune_old(pg, "readings", before) == 5
    left = sorted(r[0] for r in pg.conn.execute("SELECT t FROM readings"))
    assert left == [day0 + 2 * DAY + 60, day0 + 2 * DAY + 120, day0 + 3 * DAY + 60,
                    day0 + 3 * DAY + 120]
    names = set(upkeep_store.readings_partitions(pg))
    assert "readings_p20270112" not in names and "readings_p20270113" not in names
    assert "readings_p20270114" in names
    # A day later the cutoff passes day 2's midnight... and its end: day 2 goes whole.
    assert upkeep_store.prune_old(pg, "readings", day0 + 3 * DAY + 90) == 2
    assert "readings_p20270114" not in upkeep_store.readings_partitions(pg)


def test_dropped_rows_are_counted_by_the_estimate_analyze_keeps(pg):
    upkeep_store.add_partitions(pg, NOW - 3 * DAY)
    day0 = (NOW - 3 * DAY) // DAY * DAY
    with transaction(pg) as conn:
        conn.execute("INSERT INTO readings (node_id, t, qid, inst, value) SELECT 'n1', ? + k,"
                     " 0, 0, 1.5 FROM generate_series(1, 300) AS k", (day0,))
    pg.conn.execute("ANALYZE readings_p20270112")
    # Two more rows after the ANALYZE: the estimate does not see them (no exact count is made).
    add_reading(pg, day0 + 400)
    add_reading(pg, day0 + 500)
    assert upkeep_store.prune_old(pg, "readings", day0 + DAY) == 300
    assert telemetry_store.count_readings(pg) == 0


def test_an_old_row_in_the_default_partition_is_deleted_by_row(pg):
    upkeep_store.add_partitions(pg, NOW)
    add_reading(pg, NOW - 30 * DAY)  # no partition for that day: readings_default
    add_reading(pg, NOW - 20 * DAY, node="n2")
    assert upkeep_store.prune_old(pg, "readings", NOW - 25 * DAY) == 1
    assert [r[0] for r in pg.conn.execute("SELECT node_id FROM readings_default")] == ["n2"]
    # An empty default partition: nothing to walk.
    assert upkeep_store.prune_old(pg, "readings", NOW - 25 * DAY) == 0


def test_a_time_range_query_reads_only_its_days(pg):
    upkeep_store.add_partitions(pg, NOW - 3 * DAY)
    plan = "\n".join(r[0] for r in pg.conn.execute(
        "EXPLAIN SELECT t FROM readings WHERE node_id = 'n1' AND qid = 0"
        f" AND t >= {NOW - DAY} AND t < {NOW - DAY + 3600}"))
    assert "readings_p20270114" in plan
    for other in ("readings_p20270112", "readings_p20270113", "readings_p20270115"):
        assert other not in plan
