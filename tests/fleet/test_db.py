"""Schema, migrations and queries of fleet/db.py."""

import sqlite3

import pytest
from polylink import proto

from fleet import db as store
from fleet.ingest import Ingest


def tables(db):
    return set(db.table_names())


def test_fresh_database_migrates_to_current_version(tmp_path):
    db = store.connect(tmp_path / "f.db")
    assert store.schema_version(db) == 0
    assert store.migrate(db) == (0, store.SCHEMA_VERSION)
    assert store.schema_version(db) == store.SCHEMA_VERSION
    assert {"nodes", "frames", "readings", "bad_frames", "commands", "events", "users",
            "api_tokens", "audit", "latest"} <= tables(db)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # A second run has nothing left to do.
    assert store.migrate(db) == (store.SCHEMA_VERSION, store.SCHEMA_VERSION)


def test_upgrade_from_version_1_keeps_data_and_backfills_latest(tmp_path):
    db = store.connect(tmp_path / "f.db")
    store.migrate(db, target=1)
    assert "users" not in tables(db)
    db.conn.execute("INSERT INTO nodes (id, created) VALUES ('n1', 0)")
    db.conn.executemany(
        "INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, ?, ?, ?, ?)",
        [("n1", 10.0, 0, 0, 20.0), ("n1", 20.0, 0, 0, 21.5), ("n1", 15.0, 1, 0, 40.0)],
    )
    assert store.migrate(db) == (1, store.SCHEMA_VERSION)
    assert store.get_node(db, "n1")["id"] == "n1"
    latest = {(r["qid"], r["inst"]): (r["t"], r["value"]) for r in store.latest_values(db, "n1")}
    assert latest == {(0, 0): (20.0, 21.5), (1, 0): (15.0, 40.0)}
    assert "users" in tables(db)


def test_upgrade_from_version_13_adds_micropython_columns_and_keeps_nodes(tmp_path):
    db = store.connect(tmp_path / "f.db")
    store.migrate(db, target=13)
    db.conn.execute("INSERT INTO nodes (id, firmware_version, created) VALUES ('n1', '0.1.0', 0)")
    assert store.migrate(db) == (13, store.SCHEMA_VERSION)
    node = store.get_node(db, "n1")
    assert (node["firmware_version"], node["micropython_version"]) == ("0.1.0", None)
    assert "runtime_micropython" in db["releases"].columns_dict
    # The overview still reads its counts from the covering index alone.
    plan = " ".join(r[3] for r in db.conn.execute(
        "EXPLAIN QUERY PLAN SELECT provider, board, firmware_version, micropython_version, online,"
        " last_seen, interval, count(*) FROM nodes GROUP BY 1, 2, 3, 4"))
    assert "COVERING INDEX nodes_overview" in plan, plan


def test_newer_schema_is_refused(tmp_path):
    db = store.connect(tmp_path / "f.db")
    db.conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    with pytest.raises(store.SchemaTooNew, match="newer|knows up to"):
        store.migrate(db)


def test_failed_migration_leaves_version_unchanged(tmp_path, monkeypatch):
    db = store.connect(tmp_path / "f.db")
    store.migrate(db, target=1)
    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS[:1] + [
        "CREATE TABLE half (x); CREATE TABLE nodes (x);"  # second statement fails
    ])
    monkeypatch.setattr(store, "SCHEMA_VERSION", 2)
    with pytest.raises(sqlite3.OperationalError):
        store.migrate(db)
    assert store.schema_version(db) == 1
    assert "half" not in tables(db)


def test_frames_are_unique_per_node_direction_and_seq(db):
    store.enrol_node(db, "n1")
    db.conn.execute("INSERT INTO frames VALUES ('n1', 'up', 7, 0, 1.0, NULL, 'mqtt')")
    db.conn.execute("INSERT INTO frames VALUES ('n1', 'down', 7, 4, 1.0, NULL, 'mqtt')")
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute("INSERT INTO frames VALUES ('n1', 'up', 7, 0, 2.0, NULL, 'ttn')")


def test_unknown_node_and_command_raise_named_errors(db):
    with pytest.raises(store.UnknownNode):
        store.get_node(db, "nope")
    store.enrol_node(db, "n1")
    with pytest.raises(store.UnknownCommand):
        store.get_command(db, "n1", 99)


def test_commands_take_increasing_downlink_seqs(db):
    store.enrol_node(db, "n1")
    first = store.create_command(db, "n1", "reboot", None, "me")
    second = store.create_command(db, "n1", "identify", None, "me")
    assert second[0] > first[0] and second[1] == first[1] + 1
    assert [e["action"] for e in store.audit_log(db)][:2] == ["command", "command"]


def test_readings_window_and_limit(db):
    store.enrol_node(db, "n1")
    db.conn.executemany(
        "INSERT INTO readings (node_id, t, qid, inst, value) VALUES ('n1', ?, 0, 0, ?)",
        [(float(t), float(t)) for t in range(10)],
    )
    assert [r[0] for r in store.readings(db, "n1", limit=3)] == [7.0, 8.0, 9.0]
    assert [r[0] for r in store.readings(db, "n1", since=2, until=4)] == [2.0, 3.0, 4.0]
    assert store.readings(db, "n1", qids=[1]) == []


def test_duplicate_user_and_token_names(db):
    store.add_user(db, "bob", "hash", "operator")
    with pytest.raises(store.DuplicateName):
        store.add_user(db, "bob", "hash", "operator")
    store.add_token(db, "t", "secret-1")
    with pytest.raises(store.DuplicateName):
        store.add_token(db, "t", "secret-2")
    assert store.token_name(db, "secret-1") == "t"
    assert store.token_name(db, "secret-2") is None
    # Only the hash is stored.
    assert "secret-1" not in str(list(db.query("SELECT * FROM api_tokens")))


def test_flask_db_migrate_hook(app):
    result = app.test_cli_runner().invoke(args=["db", "migrate"])
    assert result.exit_code == 0
    assert f"{store.SCHEMA_VERSION} -> {store.SCHEMA_VERSION}" in result.output


def test_connection_closes_at_teardown(app):
    with app.app_context():
        db = store.get_db()
        assert store.get_db() is db
    with pytest.raises(sqlite3.ProgrammingError):
        db.conn.execute("SELECT 1")


def _status(seq, **body) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[:proto.encode(buf, proto.STATUS, seq, dict(body, fw="1.0.0"))])


def test_an_absent_status_field_keeps_the_last_value(db):
    # A compact STATUS leaves optional fields out: the node keeps what it last reported.
    ing = Ingest(db)
    full = {"reset": 3, "heap_free": 81920, "rssi": -67, "queue": 2, "dropped": 4, "interval": 60,
            "micropython": "1.24.1"}
    now = 10_000.0
    for i in range(4):  # a boot loop: four boots, each a full STATUS, then a compact one
        ing.add("pl/v1/n1/up", _status(2 * i, uptime=3, boots=7 + i, **full), now + 60 * i)
        ing.add("pl/v1/n1/up", _status(2 * i + 1, uptime=33), now + 60 * i + 30)
    ing.flush()
    node = store.get_node(db, "n1")
    assert {k: node[k] for k in ("uptime", "reset_cause", "heap_free", "rssi", "queue", "dropped",
                                 "boots", "interval", "micropython_version")} == {
        "uptime": 33, "reset_cause": 3, "heap_free": 81920, "rssi": -67, "queue": 2,
        "dropped": 4, "boots": 10, "interval": 60, "micropython_version": "1.24.1"}
    store.evaluate_alerts(db, now + 300)
    assert [a["kind"] for a in store.list_alerts(db, "n1")] == ["boot_loop"]
    # The log keeps what each STATUS said: a compact one has no heap reading to chart.
    log = store.status_history(db, "n1", 0)
    assert [r["heap_free"] for r in log[:2]] == [None, 81920]
