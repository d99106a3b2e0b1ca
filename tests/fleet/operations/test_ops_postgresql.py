"""`fleet doctor` and `fleet backup` on a fleet whose store is PostgreSQL (DATABASE_URL).

Backup and restore with DATABASE_URL use the real pg_dump and pg_restore (their round trip and
refusals are in test_backup.py, run with --backend=postgresql); here, what is PostgreSQL's only:
a missing or too old pg_dump, and a backup of the other kind of store. The doctor reads the schema
version through the store and never shows the URL's password.
"""

import re

import pytest

from fleet.operations import backup, doctor
from fleet.settings import Settings
from fleet.store.migrate import SCHEMA_VERSION, open_db


@pytest.fixture
def pg_url(pg_cluster):
    name = pg_cluster.fresh()
    yield pg_cluster.url(name)
    pg_cluster.drop(name)


def settings_for(tmp_path, url) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=8000, mqtt_port=1, mqtt_url=None,
                    database_url=url)


def test_doctor_reads_the_schema_of_a_postgresql_store(tmp_path, pg_url):
    open_db(pg_url).conn.close()
    found = doctor.check_migrations(doctor.Deployment(settings_for(tmp_path, pg_url), None))
    assert [(f.level, f.text) for f in found] == [
        (doctor.OK, f"schema version {SCHEMA_VERSION}, current")]


def test_doctor_says_a_postgresql_store_is_unreachable_without_its_password(tmp_path, pg_url):
    url = "postgresql://nobody:s3cret-pw@" + pg_url.split("@", 1)[1]  # a role that is not
    found = doctor.check_migrations(doctor.Deployment(settings_for(tmp_path, url), None))
    assert found[0].level == doctor.FAIL
    assert found[0].text.startswith("cannot read postgresql://nobody@")
    assert "s3cret-pw" not in found[0].text


def test_backup_says_when_pg_dump_is_missing(tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(backup.BackupError, match="pg_dump is missing .*apt-get install"):
        backup.create(settings_for(tmp_path, pg_url), tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def test_doctor_warns_when_backups_would_fail(tmp_path, pg_url, monkeypatch):
    d = doctor.Deployment(settings_for(tmp_path, pg_url), None)
    [found] = doctor.check_backup_tools(d)
    versions = re.search(r"pg_dump \(PostgreSQL (\d+)\) for a PostgreSQL (\d+) server", found.text)
    assert found.level == doctor.OK and versions, found.text
    assert int(versions[1]) >= int(versions[2])
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    [found] = doctor.check_backup_tools(d)
    assert found.level == doctor.WARN
    assert found.text.startswith("`fleet backup` would fail: pg_dump is missing")


def test_backup_refuses_a_pg_dump_older_than_the_server(tmp_path, pg_url, monkeypatch):
    # Only PostgreSQL 15's client tools are installed here, so an old pg_dump is a script that
    # answers --version as pg_dump 13 does (its real output line) and fails loudly otherwise.
    old = tmp_path / "pg13"
    old.mkdir()
    (old / "pg_dump").write_text("#!/bin/sh\n[ \"$1\" = --version ] || exit 99\n"
                                 "echo 'pg_dump (PostgreSQL) 13.16 (Debian 13.16-0+deb11u1)'\n")
    (old / "pg_dump").chmod(0o755)
    monkeypatch.setenv("PG_BINDIR", str(old))
    with pytest.raises(backup.BackupError,
                       match="PostgreSQL 13's, older than the server \\(15\\)"):
        backup.create(settings_for(tmp_path, pg_url), tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def test_a_backup_restores_only_into_its_own_kind_of_store(tmp_path, pg_url):
    sqlite = Settings(data_dir=tmp_path / "lite", port=8000, mqtt_port=1, mqtt_url=None)
    open_db(sqlite.db_path).conn.close()
    backup.create(sqlite, tmp_path / "lite.tar.gz")
    with pytest.raises(backup.BackupError, match="holds a SQLite store, and DATABASE_URL is set"):
        backup.restore(settings_for(tmp_path / "a", pg_url), tmp_path / "lite.tar.gz",
                       replace=True)
    backup.create(settings_for(tmp_path, pg_url), tmp_path / "pg.tar.gz")
    with pytest.raises(backup.BackupError, match="holds a PostgreSQL store"):
        backup.restore(Settings(data_dir=tmp_path / "b", port=8000, mqtt_port=1,
                                mqtt_url=None), tmp_path / "pg.tar.gz")
