"""`fleet db copy`: a SQLite fleet moved into PostgreSQL with nothing lost, compared table by table.

Always on a real PostgreSQL (the run's throwaway cluster), whatever --backend is.
"""

import dataclasses

import pytest
from click.testing import CliRunner
from polylink import proto

from fleet.cli.main import cli
from fleet.ingest import Ingest
from fleet.settings import from_env
from fleet.store import commands as command_store
from fleet.store import copy as store_copy
from fleet.store import exports as export_store
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import StoreError, transaction
from fleet.store.migrate import open_db
from fleet.web.auth import create_user


def frame(seq, mtype=proto.TELEMETRY, body=((0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71))):
    buf = bytearray(64)
    return bytes(buf[:proto.encode(buf, mtype, seq, list(body))])


@pytest.fixture
def lite(tmp_path):
    db = open_db(tmp_path / "fleet.db")
    ingest = Ingest(db)
    for seq in range(50):
        ingest.add(f"pl/v1/n{seq % 5}/up", frame(seq // 5), 1_800_000_000.0 + seq)
    ingest.add("pl/v1/n1/up", b"\x00garbage", 1_800_000_100.0)
    ingest.flush()
    create_user(db, "alice", "a-long-password", "admin")
    command_store.create_command(db, "n1", "reboot", None, "alice")
    yield db
    db.conn.close()


@pytest.fixture
def empty_pg(pg_cluster):
    name = pg_cluster.fresh()
    yield pg_cluster.url(name)
    pg_cluster.drop(name)


def test_every_table_arrives_with_the_same_rows(lite, empty_pg):
    target = open_db(empty_pg)
    try:
        report = store_copy.copy_store(lite, target)
        assert report["frames"][0] == 50 and report["readings"][0] == 150
        assert report["bad_frames"][0] == 1 and report["users"][0] == 1
        assert telemetry_store.frame_seqs(target, "n3") == list(range(10))
        # Ids go on after the copied ones: the next command does not collide.
        cid, _seq = command_store.create_command(target, "n1", "reboot", None, "alice")
        assert cid == 2
        assert node_store.get_node(target, "n1")["bad_frames"] == 1
    finally:
        target.conn.close()


def test_a_database_that_is_not_empty_is_refused(lite, empty_pg):
    target = open_db(empty_pg)
    try:
        store_copy.copy_store(lite, target)
        with pytest.raises(StoreError, match="not empty"):
            store_copy.copy_store(lite, target)
    finally:
        target.conn.close()


def test_a_changed_row_is_a_mismatch(lite, empty_pg):
    target = open_db(empty_pg)
    try:
        store_copy.copy_store(lite, target)
        lite.conn.execute("UPDATE readings SET value = value + 1 WHERE rowid = 1")
        cols = ["node_id", "t", "qid", "inst", "value"]
        assert store_copy.summary(lite, "readings", cols) != store_copy.summary(
            target, "readings", cols)
    finally:
        target.conn.close()


def test_the_cli_copies_data_dir_into_the_url(tmp_path, monkeypatch, empty_pg):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = open_db(tmp_path / "fleet.db")
    node_store.enrol_node(db, "n1")
    db.conn.close()
    result = CliRunner().invoke(cli, ["db", "copy", "--to", empty_pg])
    assert result.exit_code == 0, result.output
    assert "nodes" in result.output and "same on both" in result.output
    settings = dataclasses.replace(from_env(), database_url=empty_pg)
    target = open_db(settings.db_path)
    assert node_store.known_node_ids(target) == {"n1"}
    target.conn.close()


def test_an_export_cursor_goes_on_at_the_same_reading(lite, empty_pg):
    """readings' rowids become their ids on PostgreSQL and copied rows count as committed before
    any PostgreSQL transaction, so a destination halfway through gets exactly the rest."""
    export_store.save_destination(
        lite, {"name": "city", "kind": "webhook", "url": "https://x.example/", "options": "{}",
               "nodes": "[]", "tags": "[]", "enabled": 1, "created": 0.0},
        keep_secret=False, start_at_end=False)
    readings, events, r_at, e_at = export_store.fetch_after(
        lite, export_store.START, export_store.START, [], [], 100)
    export_store.advance(lite, "city", r_at, e_at, len(readings) + len(events), [], 0.0)
    rest = export_store.fetch_after(lite, r_at, e_at, [], [], 1000)[0]
    target = open_db(empty_pg)
    try:
        store_copy.copy_store(lite, target)
        row = export_store.get_destination(target, "city")
        moved = export_store.fetch_after(target, row["reading_at"], row["event_at"], [], [], 1000)
        assert len(rest) == 50 and moved[0] == rest
        with transaction(target) as conn:  # a reading stored after the move comes next
            conn.execute("INSERT INTO readings (node_id, t, qid, inst, value)"
                         " VALUES ('n1', 1.0, 0, 0, 2.5)")
        after = export_store.fetch_after(target, moved[2], moved[3], [], [], 1000)[0]
        assert [r[1:] for r in after] == [("n1", 1.0, 0, 0, 2.5)]
        assert after[0][0] > rest[-1][0]  # its id continues after the copied ones
    finally:
        target.conn.close()
