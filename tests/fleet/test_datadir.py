"""The data directory's secrets are this user's only (#19 security 9)."""

import dataclasses
import os
import stat
import subprocess
import sys

import pytest

from fleet import create_app, datadir
from fleet.broker import server
from fleet.providers import registry
from fleet.store import migrate
from fleet.store import users as user_store


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_app_makes_the_secrets_private(settings):
    old = os.umask(0o022)  # a usual login shell's
    try:
        create_app({"TESTING": True, "SETTINGS": settings})  # the session key from DATA_DIR
        db = migrate.open_db(settings.db_path)
        user_store.add_user(db, "u", "hash", "viewer")
        db.conn.close()
        registry._fernet(settings.data_dir)
    finally:
        os.umask(old)
    assert mode(settings.data_dir) == 0o700
    # On PostgreSQL (--backend=postgresql) there is no database file in DATA_DIR to check.
    files = ("secret_key", registry.KEY_FILE) + (() if settings.database_url else ("fleet.db",))
    for name in files:
        assert mode(settings.data_dir / name) == 0o600, name
    for wal in settings.data_dir.glob("fleet.db-*"):
        assert mode(wal) == 0o600, wal.name


def test_an_old_world_readable_database_is_tightened(settings):
    """About the SQLite file itself: on SQLite whatever the run's backend."""
    settings = dataclasses.replace(settings, database_url=None)
    settings.data_dir.mkdir(mode=0o755)
    settings.db_path.write_bytes(b"")
    os.chmod(settings.db_path, 0o644)
    migrate.open_db(settings.db_path).conn.close()
    assert mode(settings.db_path) == 0o600 and mode(settings.data_dir) == 0o700


def test_fleet_run_leaves_nothing_readable_by_others(fleet_run, tmp_path):
    run = fleet_run()
    run.wait_for("Press Ctrl-C to stop.", timeout=60)
    run.stop()
    data = tmp_path / "data"
    loose = []
    for path in [data, *data.rglob("*")]:
        if path.is_symlink():
            continue
        if mode(path) & 0o077:
            loose.append(f"{path.relative_to(tmp_path)} {oct(mode(path))}")
    assert not loose, "\n".join(loose)
    assert mode(data / "broker" / "passwd") == 0o600


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "example.org"])
def test_the_embedded_broker_refuses_anything_but_loopback(tmp_path, host):
    with pytest.raises(server.BrokerError, match="loopback"):
        server.AmqttBroker(1883, tmp_path, host=host)
    with pytest.raises(server.BrokerError, match="without a login"):
        server.amqtt_config(1883, host)
    r = subprocess.run([sys.executable, "-m", "fleet.broker.server", "amqtt", "1", host],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "loopback" in r.stderr


def test_the_embedded_broker_on_loopback_is_fine(tmp_path):
    assert server.AmqttBroker(1883, tmp_path, host="::1").host == "::1"
    assert server.amqtt_config(1883)["listeners"]["default"]["bind"] == "127.0.0.1:1883"


def test_a_secret_file_is_made_once_private_and_then_only_read(tmp_path):
    made = []

    def make():
        made.append(1)
        return b"s3cret\n"

    path = tmp_path / "data" / "some.key"
    assert datadir.secret_file(path, make) == b"s3cret\n"
    assert datadir.secret_file(path, make) == b"s3cret\n"
    assert made == [1]
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_two_processes_making_a_secret_at_once_both_get_the_same_whole_one(tmp_path):
    """The second process comes while the first is still making its secret (make() stands for
    that moment): it must not read an empty file, and both must end with one secret."""
    path = tmp_path / "data" / "secret_key"
    seen_by_second = []

    def make_first():
        seen_by_second.append(datadir.secret_file(path, lambda: b"second's\n"))
        return b"first's\n"

    first = datadir.secret_file(path, make_first)
    assert seen_by_second == [first] and first in (b"first's\n", b"second's\n")
    assert path.read_bytes() == first and mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left


def test_a_shared_sticky_folder_such_as_tmp_is_never_tightened(tmp_path):
    """DATA_DIR=/tmp/fleet must not make /tmp 0700 (every other user's and service's files
    there would become unreachable): a sticky, world-writable folder is left as it is."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    datadir.secret_file(shared / "secret_key", lambda: b"k\n")
    datadir.private_file(shared / "fleet.db")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert mode(shared / "secret_key") == 0o600 and mode(shared / "fleet.db") == 0o600
