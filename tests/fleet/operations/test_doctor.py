"""`fleet doctor` (#14): all well on a running fleet, and each check made to fail for real."""

import os
import time

import pytest
from selfsigned import make_cert
from services import fleet_db

from fleet.cli import cli
from fleet.operations import doctor
from fleet.store.base import connect
from fleet.store.migrate import SCHEMA_VERSION, schema_version


@pytest.fixture
def running(fleet_run, monkeypatch, data_dir):
    """A running `fleet run` on data_dir, with PORT and MQTT_PORT set for the CLI."""
    run = fleet_run()
    run.wait_for("Press Ctrl-C to stop.")
    monkeypatch.setenv("PORT", str(run.port))
    monkeypatch.setenv("MQTT_PORT", str(run.mqtt_port))
    yield run
    run.stop()


def doctor_says(runner) -> tuple[int, dict[str, list[str]]]:
    """Exit code and {check: ["LEVEL text", ...]} of `fleet doctor`."""
    r = runner.invoke(cli, ["doctor"])
    assert "Traceback" not in r.output, r.output
    found: dict[str, list[str]] = {}
    for line in r.output.splitlines()[:-1]:
        level, check, text = line[:4].strip(), line[6:22].strip(), line[23:]
        found.setdefault(check, []).append(f"{level} {text}")
    return r.exit_code, found


def test_a_healthy_fleet(running, runner, database_url):
    code, found = doctor_says(runner)
    assert code == 0, found
    # On PostgreSQL, also the client tools `fleet backup` runs (pg_dump no older than the server).
    assert set(found) == {"web certificate", "node certificate", "web port", "broker port",
                          "broker logins", "database", "disk", "clock"} | (
                              {"backup tools"} if database_url else set())
    assert all(line.startswith("ok") for lines in found.values() for line in lines), found


def test_a_stopped_fleet_does_not_answer(running, runner):
    running.stop()
    code, found = doctor_says(runner)
    assert code == 1
    assert found["web port"][0].startswith("FAIL nothing answers at http://127.0.0.1:")
    assert "is the fleet running?" in found["web port"][0]
    assert found["broker port"][0].startswith("FAIL the broker at mqtt://127.0.0.1:")


def test_broker_logins_out_of_step_with_the_database(running, runner, data_dir):
    passwd = data_dir / "broker" / "passwd"
    passwd.write_text(passwd.read_text() + "ghost:$7$101$c2FsdA==$aGFzaA==\n")
    code, found = doctor_says(runner)
    assert code == 1
    assert "FAIL" in found["broker logins"][0]
    assert "can still log in though revoked or unknown: ghost" in found["broker logins"][0]
    assert "fleet upkeep --once --broker-sync" in found["broker logins"][0]
    r = runner.invoke(cli, ["upkeep", "--once", "--broker-sync"])
    assert r.exit_code == 0, r.output
    assert doctor_says(runner)[1]["broker logins"][0].startswith("ok")


def set_schema_version(db, version: int) -> None:
    """Record another schema version, as a fleet of that version would have (no migration)."""
    if db.dialect == "sqlite":
        db.conn.execute(f"PRAGMA user_version = {version}")
    else:
        db.conn.execute("UPDATE schema_version SET version = ?", (version,))


def test_database_schema_behind_or_ahead(running, runner, settings):
    db = connect(settings.db_path)  # not open_db: that would migrate
    try:
        set_schema_version(db, SCHEMA_VERSION - 1)
        code, found = doctor_says(runner)
        assert code == 1 and "run `fleet db migrate`" in found["database"][0]
        # Looking did not migrate it.
        assert schema_version(db) == SCHEMA_VERSION - 1
        assert found["broker logins"] == ["warn not compared: the database schema is not "
                                          "current (below)"]
        set_schema_version(db, SCHEMA_VERSION + 1)
        code, found = doctor_says(runner)
        assert code == 1 and "written by a newer fleet" in found["database"][0]
    finally:
        set_schema_version(db, SCHEMA_VERSION)
        db.conn.close()


def test_no_database_at_all(runner, data_dir, database_url, request, monkeypatch):
    if database_url is None:
        code, found = doctor_says(runner)
        assert code == 1
        assert "no database at" in found["database"][0] and "is DATA_DIR right?" in found[
            "database"][0]
        return
    # PostgreSQL's database exists before the fleet (the operator creates it): one without the
    # fleet's tables is the same mistake, a DATABASE_URL naming the wrong database.
    cluster = request.getfixturevalue("pg_cluster")
    name = f"bare_{os.getpid()}_{time.monotonic_ns()}"
    cluster.sql(f"CREATE DATABASE {name}")
    try:
        monkeypatch.setenv("DATABASE_URL", cluster.url(name))
        code, found = doctor_says(runner)
        assert code == 1
        assert found["database"][0].startswith("FAIL schema version 0, this fleet needs")
    finally:
        cluster.drop(name)


def test_clock_behind_what_the_fleet_stored(running, runner, data_dir):
    r = runner.invoke(cli, ["node", "add", "n01"])
    assert r.exit_code == 0, r.output
    db = connect(fleet_db(data_dir))
    db.conn.execute("UPDATE nodes SET last_seen = ?", (time.time() + 3600,))
    db.conn.close()
    code, found = doctor_says(runner)
    assert code == 1
    assert "FAIL the clock is behind" in found["clock"][0] and "60 minutes" in found["clock"][0]


def test_clock_not_synchronised_per_timedatectl(runner, data_dir, tmp_path, monkeypatch):
    # systemd's timedatectl cannot run in this container: a stand-in prints what the real one
    # prints for `show -p NTPSynchronized --value` on an unsynchronised machine.
    tool = tmp_path / "bin" / "timedatectl"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho no\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    code, found = doctor_says(runner)
    assert found["clock"] == ["warn systemd says the clock is not synchronised: "
                              "`timedatectl set-ntp true`"]


def test_disk_space(runner, data_dir, monkeypatch):
    data_dir.mkdir(parents=True)
    monkeypatch.setattr(doctor, "WARN_FREE_FRACTION", 1.0)  # every real disk is below 100 %
    assert doctor_says(runner)[1]["disk"][0].startswith("warn ")
    monkeypatch.setattr(doctor, "MIN_FREE_BYTES", 1 << 60)  # more than any real disk holds
    code, found = doctor_says(runner)
    assert code == 1 and found["disk"][0].startswith("FAIL only ")


def test_web_certificate_expired_or_expiring_via_the_settings(runner, data_dir, tmp_path,
                                                              monkeypatch):
    cert, key = make_cert(tmp_path / "old", days=-1, not_before_days=-30)
    monkeypatch.setenv("WEB_TLS_CERT", str(cert))
    monkeypatch.setenv("WEB_TLS_KEY", str(key))
    code, found = doctor_says(runner)
    assert code == 1 and "expired on" in found["web certificate"][0]
    cert, key = make_cert(tmp_path / "soon", days=10)
    monkeypatch.setenv("WEB_TLS_CERT", str(cert))
    monkeypatch.setenv("WEB_TLS_KEY", str(key))
    assert "expires in 9 days" in doctor_says(runner)[1]["web certificate"][0]


def test_node_certificates_from_fleet_tls(runner, data_dir, monkeypatch):
    from fleet.tls import certs

    monkeypatch.delenv("TLS_DIR", raising=False)
    assert "nodes are not served over TLS" in doctor_says(runner)[1]["node certificate"][0]
    certs.init(data_dir / "tls", ["fleet.example.org"], days=10)
    server, ca = doctor_says(runner)[1]["node certificate"]
    assert server.startswith("warn ") and "expires in 9 days" in server, server
    assert ca.startswith("ok ") and "ca.pem valid until" in ca, ca
    certs.renew(data_dir / "tls")
    server, _ = doctor_says(runner)[1]["node certificate"]
    assert server.startswith("ok ") and "for fleet.example.org" in server, server


def test_certificate_checks(tmp_path):
    cert, key = make_cert(tmp_path / "a", days=90)
    (ok,) = doctor.certificate_findings("c", cert, key)
    assert ok.level == doctor.OK and "for localhost, 127.0.0.1" in ok.text
    _, other_key = make_cert(tmp_path / "b")
    (bad,) = doctor.certificate_findings("c", cert, other_key)
    assert bad.level == doctor.FAIL and "does not belong to the certificate" in bad.text
    future, _ = make_cert(tmp_path / "c", not_before_days=2)
    (early,) = doctor.certificate_findings("c", future)
    assert early.level == doctor.FAIL and "is this machine's clock right?" in early.text
    key.chmod(0o644)
    (loose,) = doctor.certificate_findings("c", cert, key)
    assert loose.level == doctor.WARN and "chmod 600" in loose.text
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    (unreadable,) = doctor.certificate_findings("c", junk)
    assert unreadable.level == doctor.FAIL and "cannot read the certificate" in unreadable.text


def test_bad_web_settings_are_a_finding_not_a_crash(runner, data_dir, monkeypatch):
    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    code, found = doctor_says(runner)
    assert code == 1 and "not a loopback address" in found["web settings"][0]


def test_a_crashing_check_is_reported_and_the_others_still_run(settings):
    def check_broken(d):
        raise RuntimeError("boom")

    found = doctor.run(doctor.Deployment(settings, None), [check_broken, doctor.check_disk])
    assert found[0].level == doctor.FAIL and "RuntimeError: boom" in found[0].text
    assert found[1].check == "disk"
