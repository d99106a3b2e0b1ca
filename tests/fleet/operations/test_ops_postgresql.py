"""`fleet doctor` and `fleet backup` on a fleet whose store is PostgreSQL (DATABASE_URL).

Backup and restore hold a SQLite store only so far (issue 15): with DATABASE_URL they refuse in
plain words instead of writing an archive without the database. The doctor reads the schema
version through the store and never shows the URL's password.
"""

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


def test_backup_and_restore_refuse_a_postgresql_store_in_plain_words(tmp_path, pg_url):
    settings = settings_for(tmp_path, pg_url)
    with pytest.raises(backup.BackupError, match="DATABASE_URL is set.*pg_dump"):
        backup.create(settings, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()
    with pytest.raises(backup.BackupError, match="DATABASE_URL is set"):
        backup.restore(settings, tmp_path / "b.tar.gz")
