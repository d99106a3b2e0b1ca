"""The schema's history: released migrations never change, and old databases upgrade intact."""

import hashlib
import multiprocessing
import re
import sqlite3
from pathlib import Path

import pytest

from fleet.store import audit as audit_store
from fleet.store import migrate
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import SchemaTooNew, connect

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"


def tables(db):
    return set(db.table_names())


def test_fresh_database_migrates_to_current_version(tmp_path):
    db = connect(tmp_path / "f.db")
    assert migrate.schema_version(db) == 0
    assert migrate.migrate(db) == (0, migrate.SCHEMA_VERSION)
    assert migrate.schema_version(db) == migrate.SCHEMA_VERSION
    assert {"nodes", "frames", "readings", "bad_frames", "commands", "events", "users",
            "api_tokens", "audit", "latest"} <= tables(db)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # A second run has nothing left to do.
    assert migrate.migrate(db) == (migrate.SCHEMA_VERSION, migrate.SCHEMA_VERSION)


def _open_at(path, start, answers):
    start.wait()
    try:
        db = migrate.open_db(path)
        answers.put(migrate.schema_version(db))
        db.conn.close()
    except Exception as e:  # noqa: BLE001 - the parent asserts on what each process met
        answers.put(repr(e))


def test_processes_opening_a_new_database_at_once_all_start(tmp_path):
    # Web processes started together all open the same new file: SQLite refused one of them
    # 'database is locked' without waiting while they changed the file to WAL (CI saw a web
    # process exit so). Before the fix about one round in three failed.
    fork = multiprocessing.get_context("fork")
    for round_no in range(15):
        path = tmp_path / f"new-{round_no}.db"
        start, answers = fork.Barrier(4), fork.Queue()
        procs = [fork.Process(target=_open_at, args=(path, start, answers)) for _ in range(4)]
        for proc in procs:
            proc.start()
        got = [answers.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(10)
        assert got == [migrate.SCHEMA_VERSION] * 4, f"round {round_no}: {got}"


def test_upgrade_from_version_1_keeps_data_and_backfills_latest(tmp_path):
    db = connect(tmp_path / "f.db")
    migrate.migrate(db, target=1)
    assert "users" not in tables(db)
    db.conn.execute("INSERT INTO nodes (id, created) VALUES ('n1', 0)")
    db.conn.executemany(
        "INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, ?, ?, ?, ?)",
        [("n1", 10.0, 0, 0, 20.0), ("n1", 20.0, 0, 0, 21.5), ("n1", 15.0, 1, 0, 40.0)],
    )
    assert migrate.migrate(db) == (1, migrate.SCHEMA_VERSION)
    assert node_store.get_node(db, "n1")["id"] == "n1"
    latest = {(r["qid"], r["inst"]): (r["t"], r["value"])
              for r in telemetry_store.latest_values(db, "n1")}
    assert latest == {(0, 0): (20.0, 21.5), (1, 0): (15.0, 40.0)}
    assert "users" in tables(db)


def test_upgrade_from_version_13_adds_micropython_columns_and_keeps_nodes(tmp_path):
    db = connect(tmp_path / "f.db")
    migrate.migrate(db, target=13)
    db.conn.execute("INSERT INTO nodes (id, firmware_version, created) VALUES ('n1', '0.1.0', 0)")
    assert migrate.migrate(db) == (13, migrate.SCHEMA_VERSION)
    node = node_store.get_node(db, "n1")
    assert (node["firmware_version"], node["micropython_version"]) == ("0.1.0", None)
    assert "runtime_micropython" in db["releases"].columns_dict
    # The overview still reads its counts from the covering index alone.
    plan = " ".join(r[3] for r in db.conn.execute(
        "EXPLAIN QUERY PLAN SELECT provider, board, firmware_version, micropython_version, online,"
        " last_seen, interval, count(*) FROM nodes GROUP BY 1, 2, 3, 4"))
    assert "COVERING INDEX nodes_overview" in plan, plan


def test_newer_schema_is_refused(tmp_path):
    db = connect(tmp_path / "f.db")
    db.conn.execute(f"PRAGMA user_version = {migrate.SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="newer|knows up to"):
        migrate.migrate(db)


def test_failed_migration_leaves_version_unchanged(tmp_path, monkeypatch):
    db = connect(tmp_path / "f.db")
    migrate.migrate(db, target=1)
    monkeypatch.setattr(migrate, "MIGRATIONS", migrate.MIGRATIONS[:1] + [
        "CREATE TABLE half (x); CREATE TABLE nodes (x);"  # second statement fails
    ])
    monkeypatch.setattr(migrate, "SCHEMA_VERSION", 2)
    with pytest.raises(sqlite3.OperationalError):
        migrate.migrate(db)
    assert migrate.schema_version(db) == 1
    assert "half" not in tables(db)


def released() -> dict[str, str]:
    """{file name: SHA-256} of every released migration (migrations.sha256, sha256sum format)."""
    lines = (HERE / "migrations.sha256").read_text().splitlines()
    return {name: digest for digest, name in (ln.split() for ln in lines if ln.strip())}


def test_released_migrations_never_change():
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in migrate.migration_files()}
    # The hand-written PostgreSQL twins are released with their migration and held the same way.
    files.update({f"postgresql/{name}": hashlib.sha256(p.read_bytes()).hexdigest()
                  for name, p in migrate.postgresql_twins().items()})
    for name, digest in released().items():
        assert name in files, f"released migration {name} was removed or renamed"
        assert files[name] == digest, f"released migration {name} was edited: add a new one"
    new = sorted(set(files) - set(released()))
    assert not new, f"record the checksums of {new} in tests/fleet/store/migrations.sha256"


def test_migration_numbers_have_no_gap(tmp_path):
    versions = [int(p.name[:4]) for p in migrate.migration_files()]
    assert versions == list(range(1, len(versions) + 1))
    assert migrate.SCHEMA_VERSION == len(versions)
    for name in ("0001_a.sql", "0003_c.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(ValueError, match="0003_c.sql: expected version 0002"):
        migrate.migration_files(tmp_path)


def load(dump: Path, path: Path):
    """A database file made from a dump of an old fleet's database (user_version included)."""
    conn = sqlite3.connect(path)
    conn.executescript(dump.read_text())
    conn.close()
    return connect(path)


def contents(db) -> dict[str, list[tuple]]:
    """Every table's rows, in a stable order."""
    tables = [r[0] for r in db.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: sorted(db.conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in tables}


def schema(db) -> set[tuple]:
    """(type, name, table, SQL with whitespace collapsed) of every table and index."""
    return {(t, n, tbl, re.sub(r"\s+", " ", sql or "").replace("( ", "(").replace(" )", ")"))
            for t, n, tbl, sql in db.conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master")}


def test_a_database_at_head_made_before_the_store_package_is_left_as_it_is(tmp_path):
    db = load(FIXTURES / "schema16.sql", tmp_path / "old.db")
    before = contents(db)
    assert migrate.migrate(db) == (16, migrate.SCHEMA_VERSION)
    # Every stored value is left as it is; columns added since 16 (bad_frames.size) come after.
    after = contents(db)
    for table, rows in before.items():
        width = len(rows[0]) if rows else 0
        assert [r[:width] for r in after[table]] == rows, table
    fresh = migrate.open_db(tmp_path / "fresh.db")
    assert schema(db) == schema(fresh)
    assert len(node_store.list_nodes(db)) == 5
    assert audit_store.audit_log(db, limit=1)[0]["action"] == "test.fixture"


def test_a_database_at_version_10_upgrades_with_no_loss(tmp_path):
    db = load(FIXTURES / "schema10.sql", tmp_path / "old.db")
    before = contents(db)
    assert sum(map(len, before.values())) > 40
    assert migrate.migrate(db) == (10, migrate.SCHEMA_VERSION)
    after = contents(db)
    for table, rows in before.items():
        width = len(rows[0]) if rows else 0
        # Columns added later come after the old ones; the old ones keep every value.
        assert sorted((r[:width] for r in after[table]), key=repr) == rows, table
    assert schema(db) == schema(migrate.open_db(tmp_path / "fresh.db"))
    # What the later migrations added reads as their defaults.
    node = node_store.get_node(db, "n0")
    assert (node["name"], node["micropython_version"]) == ("node 0", None)
    assert db.conn.execute("SELECT count(*) FROM providers").fetchone()[0] == 0


def test_every_postgresql_twin_replaces_a_migration_of_the_same_name():
    names = {p.name for p in migrate.migration_files()}
    assert set(migrate.postgresql_twins()) <= names


def test_portable_types_map_to_postgresql():
    sql = migrate.for_postgresql("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, t REAL,"
                                 " b BLOB, s TEXT) WITHOUT ROWID;")
    assert sql == ("CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
                   " n BIGINT, t DOUBLE PRECISION, b BYTEA, s TEXT);")


def _columns_sqlite(db) -> dict[str, list[str]]:
    return {t: [r[1] for r in db.conn.execute(f"PRAGMA table_info({t})")]
            for t in tables(db) if not t.startswith("sqlite_")}


# Columns only PostgreSQL needs (migrations 0029 and 0038): the exports' commit order, which
# SQLite's rowid already is (fleet/store/exports.py).
POSTGRESQL_ONLY = {("readings", "id"), ("readings", "xact"), ("events", "xact"),
                   *(("reading_commits", c) for c in ("xact", "first_id", "last_id", "at"))}


def _columns_postgresql(db) -> dict[str, list[str]]:
    cols: dict[str, list[str]] = {}
    # Partitions (readings' days) are PostgreSQL's storage of one table, not tables of the schema.
    for table, column in db.conn.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c"
            " JOIN pg_class k ON k.relname = c.table_name AND NOT k.relispartition"
            " WHERE c.table_schema = current_schema() AND c.table_name != 'schema_version'"
            " ORDER BY c.table_name, c.ordinal_position"):
        if (table, column) not in POSTGRESQL_ONLY:
            cols.setdefault(table, []).append(column)
    return cols


def test_both_dialects_reach_the_same_tables_and_columns(tmp_path, pg_cluster):
    """Whatever the backend of this run, the PostgreSQL history is checked against SQLite's."""
    lite = migrate.open_db(tmp_path / "fleet.db")
    name = pg_cluster.fresh()
    try:
        pg = migrate.open_db(pg_cluster.url(name))
        assert migrate.schema_version(pg) == migrate.SCHEMA_VERSION
        assert _columns_postgresql(pg) == _columns_sqlite(lite)
        pg.conn.close()
    finally:
        lite.conn.close()
        pg_cluster.drop(name)
