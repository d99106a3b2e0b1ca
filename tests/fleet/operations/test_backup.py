"""`fleet backup` and `fleet restore` (#14, #15): a round trip with a running fleet, modes kept,
and every bad archive refused with DATA_DIR and the database left exactly as they were.

Every test runs on both backends: with --backend=postgresql the database goes through the real
pg_dump and pg_restore, and a second fleet (the restore's target) gets an empty database of its
own in the test cluster."""

import gc
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from click.testing import CliRunner
from services import fleet_db

from fleet.cli import cli
from fleet.operations import backup
from fleet.settings import Settings
from fleet.store import pgdump
from fleet.store.migrate import SCHEMA_VERSION, open_db


class Ran:
    def __init__(self, result):
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr


@pytest.fixture
def empty_db(request):
    """make() -> the URL of a new, empty PostgreSQL database on --backend=postgresql, else None."""
    made = []

    def make():
        if request.config.getoption("--backend") != "postgresql":
            return None
        cluster = request.getfixturevalue("pg_cluster")
        name = f"empty{len(made)}_{os.getpid()}_{time.monotonic_ns()}"
        cluster.sql(f"CREATE DATABASE {name}")  # from template1: no fleet tables
        made.append((cluster, name))
        return cluster.url(name)

    yield make
    for cluster, name in made:
        cluster.drop(name)


def fleet(data_dir: Path, *args, stdin: str | None = None, check=True, db=None) -> Ran:
    """The `fleet` command in this process (click's runner) on data_dir (and db's database)."""
    env = {"DATA_DIR": str(data_dir), "MQTT_URL": None}
    if db:
        env["DATABASE_URL"] = db
    result = CliRunner().invoke(cli, list(args), input=stdin, env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    # A command's database connection closes when the process exits; in this process, when it
    # is collected (restore refuses a DATA_DIR whose database any process holds open).
    gc.collect()
    r = Ran(result)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def tree(data_dir: Path) -> dict[str, tuple[int, str | None]]:
    """{relative path: (mode, sha256 or None for a folder)} of what a backup keeps."""
    out = {}
    for path in sorted(data_dir.rglob("*")):
        rel = path.relative_to(data_dir).as_posix()
        if backup.skipped(Path(rel)) or rel.startswith("fleet.db"):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        out[rel] = (mode, None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def state(data_dir: Path, url=None) -> dict:
    db = open_db(url or fleet_db(data_dir))
    try:
        conn = db.conn
        return {"users": conn.execute("SELECT name, role FROM users ORDER BY name").fetchall(),
                "nodes": conn.execute("SELECT id FROM nodes ORDER BY id").fetchall()}
    finally:
        db.conn.close()


def mqtt_login_works(port: int, user: str, password: str) -> bool:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=user)
    client.username_pw_set(user, password)
    try:
        client.connect("127.0.0.1", port, 10)
    except OSError:
        return False
    result = {}
    client.on_connect = lambda c, u, f, rc, p=None: result.setdefault("rc", rc)
    client.loop_start()
    try:
        for _ in range(100):
            if "rc" in result:
                break

            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    return result.get("rc") == 0


def test_round_trip_with_a_running_fleet(fleet_run, tmp_path, empty_db, monkeypatch):
    run = fleet_run()
    run.wait_for("Press Ctrl-C to stop.")
    data = tmp_path / "data"
    node = fleet(data, "node", "add", "n01").stdout
    password = node.split("mqtt password")[1].split()[0]
    fleet(data, "keys", "create", "k1")
    fleet(data, "release", "build", "0.2.0", "--board", "ESP32_GENERIC")
    fleet(data, "user", "add", "bob", "--role", "operator", "--password-stdin",
          stdin="long enough pw\n")
    assert mqtt_login_works(run.mqtt_port, "n01", password)

    archive = tmp_path / "backups" / "fleet.tar.gz"
    archive.parent.mkdir()
    out = fleet(data, "backup", str(archive)).stdout  # while the fleet runs
    assert "backup written to" in out
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    before_tree, before_state = tree(data), state(data)
    assert run.stop() == 0

    restored, restored_db = tmp_path / "restored", empty_db()
    os.chmod(tmp_path, 0o755)  # DATA_DIR's parent (/var/lib) is not the restore's to tighten
    out = fleet(restored, "restore", str(archive), db=restored_db).stdout
    assert f"into {restored}" in out
    assert stat.S_IMODE(restored.stat().st_mode) == 0o700
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert tree(restored) == before_tree  # every file, its bytes and its mode
    if restored_db is None:
        assert stat.S_IMODE((restored / "fleet.db").stat().st_mode) == 0o600
    else:
        assert not (restored / "fleet.pgdump").exists()  # the dump went into the database
    for secret in ("broker/passwd", "broker/services.json", "ota/keys/k1.pem"):
        assert before_tree[secret][0] == 0o600, secret
    assert state(restored, restored_db) == before_state
    assert any(rel.startswith("releases/files/") for rel in before_tree)
    assert "0.2.0" in fleet(restored, "release", "list", db=restored_db).stdout
    assert ("bob", "operator") in before_state["users"] and [("n01",)] == before_state["nodes"]

    # The restored fleet comes up, and the node's login works on its broker.
    from services import FleetRun, free_port
    if restored_db:
        monkeypatch.setenv("DATABASE_URL", restored_db)
    again = FleetRun(restored, free_port(), free_port())
    try:
        again.wait_for("Press Ctrl-C to stop.")
        assert "First run" not in again.output()  # the admin of the backup, not a new one
        assert mqtt_login_works(again.mqtt_port, "n01", password)
        assert not mqtt_login_works(again.mqtt_port, "n01", "wrong-password")
    finally:
        assert again.stop() == 0


def test_a_backup_is_consistent_while_the_store_is_written(tmp_path, settings, empty_db):
    db = open_db(settings.db_path)
    db.conn.execute("CREATE TABLE t (n INTEGER)")  # a table of this test only
    # A write transaction open (uncommitted) while the backup runs: the copy holds the last
    # committed state, and the backup does not wait for the writer to finish.
    db.conn.execute("INSERT INTO t VALUES (1)")
    db.conn.execute("BEGIN IMMEDIATE" if db.dialect == "sqlite" else "BEGIN")
    db.conn.execute("INSERT INTO t VALUES (2)")
    backup.create(settings, tmp_path / "b.tar.gz")
    db.conn.execute("COMMIT")
    db.conn.close()
    if settings.database_url is None:
        with tarfile.open(tmp_path / "b.tar.gz") as tar:
            (tmp_path / "x.db").write_bytes(tar.extractfile("data/fleet.db").read())
        copy = open_db(tmp_path / "x.db")
    else:
        target = Settings(data_dir=tmp_path / "x", port=8000, mqtt_port=1, mqtt_url=None,
                          database_url=empty_db())
        backup.restore(target, tmp_path / "b.tar.gz")
        copy = open_db(target.database_url)
    assert copy.conn.execute("SELECT n FROM t").fetchall() == [(1,)]
    copy.conn.close()


# --- refusals: each leaves DATA_DIR exactly as it was ------------------------------------------

@pytest.fixture
def made(tmp_path, settings, empty_db):
    """(settings, archive) of a small fleet's backup, and a second fleet with other content."""
    fleet(settings.data_dir, "node", "add", "n01")
    fleet(settings.data_dir, "keys", "create", "k1")
    archive = tmp_path / "good.tar.gz"
    backup.create(settings, archive)
    target, target_db = tmp_path / "target", empty_db()
    fleet(target, "node", "add", "other", db=target_db)
    return Settings(data_dir=target, port=8000, mqtt_port=1, mqtt_url=None,
                    database_url=target_db), archive


def rebuild(archive: Path, dest: Path, edit_manifest=None, edit_member=None, extra=None) -> Path:
    """A copy of archive with its manifest or a member changed, or an extra member added."""
    with tarfile.open(archive) as src, tarfile.open(dest, "w:gz") as out:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == backup.MANIFEST and edit_manifest:
                manifest = json.loads(data)
                edit_manifest(manifest)
                data = json.dumps(manifest).encode()
            elif data is not None and edit_member:
                data = edit_member(member.name, data)
            if data is not None:
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))
            else:
                out.addfile(member)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dest


def database(settings):
    """The database's whole contents: the SQLite file's bytes, or every PostgreSQL table's rows."""
    if settings.database_url is None:
        return (settings.data_dir / "fleet.db").read_bytes()
    db = open_db(settings.database_url)
    try:
        return {t: sorted(map(repr, db.conn.execute(f"SELECT * FROM {t}").fetchall()))
                for t in db.table_names()}
    finally:
        db.conn.close()


def refused(settings, archive, message, replace=True):
    before = tree(settings.data_dir), database(settings)
    r = fleet(settings.data_dir, "restore", str(archive), *(["--replace"] if replace else []),
              check=False, db=settings.database_url)
    assert r.returncode == 1, r.stdout
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (tree(settings.data_dir), database(settings)) == before
    leftovers = [p.name for p in settings.data_dir.parent.iterdir() if "restore" in p.name]
    assert not leftovers, leftovers


def test_replace_keeps_the_old_contents_aside(made, empty_db):
    settings, archive = made
    out = fleet(settings.data_dir, "restore", str(archive), "--replace",
                db=settings.database_url).stdout
    aside = Path(out.split("previous contents are in ")[1].strip())
    if settings.database_url is None:
        assert state(aside)["nodes"] == [("other",)]
    else:
        # The database as it was, dumped beside DATA_DIR's old files: it restores as it was.
        old = empty_db()
        pgdump.restore(old, aside / backup.PG_DUMP)
        assert state(aside, old)["nodes"] == [("other",)]
    assert state(settings.data_dir, settings.database_url)["nodes"] == [("n01",)]


def test_a_data_dir_in_use_is_not_restored_over(made):
    settings, archive = made
    refused(settings, archive, "is not empty: pass --replace", replace=False)
    # This test's process now holds the database open, as a running fleet would.
    db = open_db(settings.db_path)
    try:
        refused(settings, archive, "a fleet is running on" if settings.database_url is None
                else "other session(s)")
    finally:
        db.conn.close()


def test_not_a_backup(made, tmp_path):
    settings, _ = made
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(5000))
    refused(settings, junk, "is not a readable Polylink backup")
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(__file__, arcname="notes.txt")
    refused(settings, plain, "not a Polylink backup: it does not start with")


def test_a_truncated_backup(made, tmp_path):
    settings, archive = made
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    refused(settings, cut, "is not a readable Polylink backup")


def test_a_damaged_file(made, tmp_path):
    settings, archive = made
    bad = rebuild(archive, tmp_path / "bad.tar.gz", edit_member=lambda name, data: (
        data.replace(b"n01", b"n02") if name == "data/broker/passwd" else data))
    refused(settings, bad, "broker/passwd in the backup is damaged")


def garbled(archive: Path, dest: Path, name: str, where: slice) -> Path:
    """A copy of archive with the bytes where of member data/name garbled (the same garbage each
    time) and the manifest's SHA-256 fixed to match: only the database's own checks can tell."""

    def garble(member, data):
        if member != "data/" + name:
            return data
        data = bytearray(data)
        size = len(data[where])
        data[where] = (bytes(range(256)) * (size // 256 + 1))[:size]
        return bytes(data)

    def rehash(manifest):
        with tarfile.open(archive) as tar:
            fixed = garble("data/" + name, tar.extractfile("data/" + name).read())
        manifest["files"][name]["sha256"] = hashlib.sha256(fixed).hexdigest()

    return rebuild(archive, dest, edit_manifest=rehash, edit_member=garble)


def test_a_damaged_database(made, tmp_path):
    settings, archive = made
    if settings.database_url is None:
        bad = garbled(archive, tmp_path / "bad.tar.gz", "fleet.db", slice(4096, 8192))
        refused(settings, bad, "the database in the backup")  # the second page
        return
    # pg_dump's custom format: a table of contents up front, then the tables' compressed data.
    bad = garbled(archive, tmp_path / "toc.tar.gz", backup.PG_DUMP, slice(0, 64))
    refused(settings, bad, "the database dump in the backup cannot be read")
    bad = garbled(archive, tmp_path / "mid.tar.gz", backup.PG_DUMP, slice(20000, 22048))
    refused(settings, bad, "the database dump in the backup cannot be read")


def test_a_restore_that_fails_part_way_changes_nothing(settings, tmp_path, empty_db):
    """psql stops at the first error of the restore's one transaction: the DROP of the old
    tables that ran before it is rolled back too."""
    if settings.database_url is None:
        pytest.skip("PostgreSQL's restore transaction; SQLite's restore is a folder rename")
    db = open_db(settings.database_url)
    db.conn.execute("CREATE SCHEMA extra")  # pg_dump takes it along; the target has one already
    db.conn.close()
    fleet(settings.data_dir, "node", "add", "n01")
    backup.create(settings, tmp_path / "b.tar.gz")
    target = Settings(data_dir=tmp_path / "target", port=8000, mqtt_port=1, mqtt_url=None,
                      database_url=empty_db())
    fleet(target.data_dir, "node", "add", "other", db=target.database_url)
    db = open_db(target.database_url)
    db.conn.execute("CREATE SCHEMA extra")
    db.conn.close()
    refused(target, tmp_path / "b.tar.gz", 'schema "extra" already exists')


def test_a_newer_backup_format_or_schema(made, tmp_path):
    settings, archive = made
    newer = rebuild(archive, tmp_path / "f.tar.gz",
                    edit_manifest=lambda m: m.update(format_version=backup.FORMAT_VERSION + 1))
    refused(settings, newer, "made by a newer Polylink")
    newer = rebuild(archive, tmp_path / "s.tar.gz",
                    edit_manifest=lambda m: m.update(schema=SCHEMA_VERSION + 1))
    refused(settings, newer, f"newer than this fleet's {SCHEMA_VERSION}: upgrade the fleet first")


def test_a_member_outside_the_data_dir_or_not_listed(made, tmp_path):
    settings, archive = made
    evil = rebuild(archive, tmp_path / "e.tar.gz", extra={"data/../../evil": b"x"})
    refused(settings, evil, "outside the data directory")
    assert not (tmp_path / "evil").exists() and not (settings.data_dir.parent / "evil").exists()
    extra = rebuild(archive, tmp_path / "x.tar.gz", extra={"data/planted": b"x"})
    refused(settings, extra, "which its manifest does not list")


def test_a_missing_file(made, tmp_path):
    settings, archive = made
    with tarfile.open(archive) as src, tarfile.open(tmp_path / "m.tar.gz", "w:gz") as out:
        for member in src:
            if member.name != "data/ota/keys/k1.pem":
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
    refused(settings, tmp_path / "m.tar.gz", "the backup is incomplete: ota/keys/k1.pem missing")


def test_backup_refuses_a_data_dir_without_a_fleet(tmp_path, data_dir, empty_db):
    db = empty_db()
    r = fleet(data_dir, "backup", str(tmp_path / "b.tar.gz"), check=False, db=db)
    assert r.returncode == 1, r.stdout
    assert ("no fleet database in" if db is None else "holds no fleet") in r.stderr
    assert not (tmp_path / "b.tar.gz").exists()


def test_the_archive_is_gzip_with_the_manifest_first(made):
    _, archive = made
    with gzip.open(archive) as f:
        first = tarfile.TarInfo.frombuf(f.read(512), "utf-8", "surrogateescape")
    assert first.name == backup.MANIFEST
