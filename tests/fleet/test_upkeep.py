"""Upkeep (fleet/upkeep.py): alerts, expired claim tokens and retention without any page view."""

import os
import subprocess
import sys
import threading
import time

import pytest
from services import READY, fleet_db

from fleet import upkeep
from fleet.settings import SettingsError, from_env
from fleet.store import alerts as alert_store
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import upkeep as upkeep_store
from fleet.store.base import StoreError, transaction
from fleet.store.migrate import open_db


def wait_until(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def heard(db, node_id, t, online=1):
    node_store.enrol_node(db, node_id)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET last_seen = ?, online = ?, interval = 60 WHERE id = ?",
                     (t, online, node_id))


def offline_alerts(db):
    return [a["node_id"] for a in alert_store.list_alerts(db) if a["kind"] == "offline"]


def test_worker_opens_the_offline_alert_by_itself(settings, db):
    heard(db, "quiet", time.time() - 7200)
    heard(db, "fine", time.time())
    worker = upkeep.Upkeep(settings, every=0.1)
    stopping = threading.Event()
    logged = []
    thread = threading.Thread(target=worker.run, args=(stopping, logged.append), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: offline_alerts(db) == ["quiet"])
        # It keeps going: the node comes back and the next rounds resolve the alert.
        heard(db, "quiet", time.time())
        assert wait_until(lambda: offline_alerts(db) == [])
    finally:
        stopping.set()
        thread.join(30)
    assert not thread.is_alive() and worker.errors == 0 and worker.rounds >= 2
    assert upkeep_store.upkeep_state(db)["alerts"]["at"] > time.time() - 60
    assert any('"offline":1' in line for line in logged), logged


def test_a_failing_round_is_logged_and_the_worker_goes_on(settings, db, monkeypatch):
    calls = []

    def flaky(conn, now=None):
        calls.append(now)
        if len(calls) == 1:
            raise StoreError("disk full")
        return {}

    monkeypatch.setattr(alert_store, "evaluate_alerts", flaky)
    worker = upkeep.Upkeep(settings, every=0.1)
    stopping = threading.Event()
    logged = []
    thread = threading.Thread(target=worker.run, args=(stopping, logged.append), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: len(calls) >= 2)
    finally:
        stopping.set()
        thread.join(30)
    assert worker.errors == 1 and "round failed: StoreError: disk full" in logged[0]


def test_status_history_is_pruned_after_the_retention_days(settings, db):
    now = time.time()
    node_store.enrol_node(db, "n1")
    with transaction(db) as conn:
        conn.executemany("INSERT INTO status_log (node_id, t, boots) VALUES ('n1', ?, 1)",
                         [(now - d * 86400,) for d in (0.5, 10, 89, 91, 200, 400)])
    worker = upkeep.Upkeep(settings, prune_every=3600)
    done = worker.round(db, now)
    assert done["prune"]["status_log"] == 3
    left = sorted(round((now - r[0]) / 86400) for r in db.conn.execute("SELECT t FROM status_log"))
    assert left == [0, 10, 89]
    # Not again within the hour; a later round after it prunes what aged meanwhile.
    assert "prune" not in worker.round(db, now + 60)
    assert worker.round(db, now + 86400 * 2)["prune"]["status_log"] == 1
    assert upkeep_store.upkeep_state(db)["prune"]["detail"] == {
        "status_log": 1, "bad_frames": 0, "provider_downlinks": 0,
        "days": {"status_log": 90, "bad_frames": 30, "provider_downlinks": 7}}


def test_pruning_goes_in_chunks(db):
    node_store.enrol_node(db, "n1")
    with transaction(db) as conn:
        conn.executemany("INSERT INTO status_log (node_id, t, boots) VALUES ('n1', ?, 1)",
                         [(float(i),) for i in range(25)])
    assert upkeep_store.prune_old(db, "status_log", 20.0, chunk=7) == 20
    assert db.conn.execute("SELECT count(*) FROM status_log").fetchone()[0] == 5


def _fill(db, now):
    """Two nodes with readings, receptions, events and bad frames 1, 10, 40 and 400 days old."""
    ages = (1, 10, 40, 400)
    for node in ("n1", "n2"):
        node_store.enrol_node(db, node)
    with transaction(db) as conn:
        for node in ("n1", "n2"):
            for qid in (1, 2):
                conn.executemany("INSERT INTO readings (node_id, t, qid, inst, value)"
                                 " VALUES (?, ?, ?, 0, 1.5)",
                                 [(node, now - d * 86400, qid) for d in ages])
                conn.execute("INSERT INTO latest (node_id, qid, inst, t, value)"
                             " VALUES (?, ?, 0, ?, 1.5)", (node, qid, now - 86400))
            conn.executemany("INSERT INTO receptions (node_id, seq, provider, received_at)"
                             " VALUES (?, ?, 'ttn', ?)",
                             [(node, i, now - d * 86400) for i, d in enumerate(ages)])
            conn.executemany("INSERT INTO events (node_id, t, received_at, code)"
                             " VALUES (?, ?, ?, 1)",
                             [(node, now - d * 86400, now - d * 86400) for d in ages])
        conn.executemany("INSERT INTO bad_frames (node_id, received_at, error) VALUES"
                         " ('n1', ?, 'bad')", [(now - d * 86400,) for d in ages])
        conn.executemany("INSERT INTO provider_downlinks (node_id, provider, t, size) VALUES"
                         " ('n2', 'ttn', ?, 12)", [(now - d * 86400,) for d in ages])


def _ages(db, table, column, now):
    return sorted(round((now - t) / 86400) for (t,) in
                  db.conn.execute(f"SELECT {column} FROM {table}"))


def test_readings_events_and_bad_frames_are_kept_as_configured(settings, db):
    import dataclasses

    now = time.time()
    _fill(db, now)
    # The defaults keep readings, receptions and events for ever, bad frames 30 days.
    done = upkeep.Upkeep(settings).round(db, now)
    assert done["prune"] == {"status_log": 0, "bad_frames": 2, "provider_downlinks": 3}
    assert _ages(db, "readings", "t", now) == [1] * 4 + [10] * 4 + [40] * 4 + [400] * 4
    assert _ages(db, "bad_frames", "received_at", now) == [1, 10]
    # A city that keeps a year of telemetry and 30 days of events.
    worker = upkeep.Upkeep(dataclasses.replace(settings, readings_days=365, events_days=30))
    done = worker.round(db, now)
    assert done["prune"] == {"status_log": 0, "readings": 4, "receptions": 2, "senml_seen": 0,
                             "events": 4,
                             "bad_frames": 0, "provider_downlinks": 0}
    assert _ages(db, "readings", "t", now) == [1] * 4 + [10] * 4 + [40] * 4
    assert _ages(db, "receptions", "received_at", now) == [1, 1, 10, 10, 40, 40]
    assert _ages(db, "events", "t", now) == [1, 1, 10, 10]
    # The latest values stay: the node list still shows each node's last reading.
    assert db.conn.execute("SELECT count(*) FROM latest").fetchone()[0] == 4


@pytest.mark.parametrize("chunk", [1, 3, 5, 100])
def test_pruning_many_groups_in_chunks_deletes_exactly_the_old_rows(db, chunk):
    now = time.time()
    _fill(db, now)
    assert upkeep_store.prune_old(db, "readings", now - 5 * 86400, chunk=chunk) == 12
    assert _ages(db, "readings", "t", now) == [1] * 4
    assert upkeep_store.prune_old(db, "events", now - 5 * 86400, chunk=chunk) == 6
    assert upkeep_store.prune_old(db, "receptions", now - 5 * 86400, chunk=chunk) == 6
    assert upkeep_store.prune_old(db, "readings", now - 5 * 86400, chunk=chunk) == 0


def test_retention_zero_keeps_everything(settings, db):
    import dataclasses

    node_store.enrol_node(db, "n1")
    with transaction(db) as conn:
        conn.execute("INSERT INTO status_log (node_id, t, boots) VALUES ('n1', 1.0, 1)")
    worker = upkeep.Upkeep(dataclasses.replace(settings, status_log_days=0, bad_frames_days=0))
    # Only the downlink log (its budget needs today's rows alone) has a fixed retention.
    assert worker.round(db)["prune"] == {"provider_downlinks": 0}
    assert db.conn.execute("SELECT count(*) FROM status_log").fetchone()[0] == 1


@pytest.mark.parametrize("name,value,message", [
    ("STATUS_LOG_DAYS", "ninety", "is not an integer"),
    ("STATUS_LOG_DAYS", "-1", "outside 0..36500"),
    ("UPKEEP_EVERY", "0", "outside 0.1..3600"),
    ("UPKEEP_EVERY", "nan", "outside"),
    ("READINGS_DAYS", "1y", "is not an integer"),
    ("EVENTS_DAYS", "-5", "outside 0..36500"),
    ("BAD_FRAMES_DAYS", "40000", "outside 0..36500"),
])
def test_bad_settings_are_refused_by_name(monkeypatch, data_dir, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name + ".*" + message):
        from_env()


def test_settings_from_the_environment(monkeypatch, data_dir):
    monkeypatch.setenv("STATUS_LOG_DAYS", "30")
    monkeypatch.setenv("UPKEEP_EVERY", "2.5")
    monkeypatch.setenv("READINGS_DAYS", "730")
    monkeypatch.setenv("BAD_FRAMES_DAYS", "0")
    s = from_env()
    assert (s.status_log_days, s.upkeep_every) == (30, 2.5)
    assert s.retention() == {"status_log": 30, "readings": 730, "receptions": 730,
                             "senml_seen": 730, "events": 0,
                             "bad_frames": 0, "provider_downlinks": 7}


def test_upkeep_once_from_cron(runner, db):
    from fleet.cli import cli

    heard(db, "quiet", time.time() - 7200)
    result = runner.invoke(cli, ["upkeep", "--once"])
    assert result.exit_code == 0, result.output
    assert "offline 1" in result.output
    assert ("older than their retention deleted: status_log 0, bad_frames 0, "
            "provider_downlinks 0" in result.output)
    assert offline_alerts(db) == ["quiet"]


def test_fleet_run_alerts_an_offline_node_with_nobody_looking(fleet_run, tmp_path, monkeypatch):
    """A real `fleet run`: a simulated node goes away; its offline alert opens without a request."""
    import os

    monkeypatch.setenv("UPKEEP_EVERY", "1")
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    assert ("upkeep          alerts every 1 s; keeps status_log 90 d, bad_frames 30 d, "
            "provider_downlinks 7 d, the rest for ever" in run.output())
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), MQTT_PORT=str(run.mqtt_port))
    env.pop("MQTT_URL", None)
    # The node runs, then its process ends without a goodbye: the broker publishes its will.
    sim = subprocess.run([sys.executable, "-m", "polylink_host.sim", "--nodes", "1",
                          "--interval", "1", "--duration", "4"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    db = open_db(fleet_db(tmp_path / "data"))
    try:
        assert node_store.get_node(db, "sim-0000")["last_seen"] is not None
        assert wait_until(lambda: offline_alerts(db) == ["sim-0000"], timeout=90), \
            run.output()
        assert upkeep_store.upkeep_state(db)["alerts"]["at"] > time.time() - 60
    finally:
        db.conn.close()
    log = (tmp_path / "data" / "logs" / "upkeep.log").read_text()
    assert '"offline":1' in log
    assert run.stop() == 0


def _claim_connack(port: int, user: str, password: str):
    """The CONNACK reason a claim-listener login gets (None if the broker never answered)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="claim-probe", protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.on_connect = lambda client, userdata, flags, rc, props: got.append(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        wait_until(lambda: got, timeout=30)
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0] if got else None


def test_an_expired_claim_token_is_refused_by_the_broker_on_time(tmp_path):
    """Real mosquitto with the claim listener: nothing but the clock makes the token stop."""
    from services import free_port

    from fleet.broker import auth as brokerauth
    from fleet.broker.server import MosquittoBroker, find_mosquitto
    from fleet.identity import claims
    from fleet.settings import Settings

    assert find_mosquitto(), "mosquitto is not installed; `.ci/run` installs it"
    settings = Settings(data_dir=tmp_path / "data", port=free_port(), mqtt_port=free_port(),
                        mqtt_url=None,
                        database_url=os.environ.get("DATABASE_URL"))
    claim_port = free_port()
    db = open_db(settings.db_path)
    brokerauth.sync(db, settings.broker_dir)
    broker = MosquittoBroker(settings.mqtt_port, settings.broker_dir, auth=True,
                             claim_port=claim_port).start()
    # every=3600: only the token's own expiry can wake the worker in time.
    worker = upkeep.Upkeep(settings, every=3600, broker=True)
    stopping = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stopping, lambda text: None), daemon=True)
    try:
        lifetime = 20.0  # s: long enough to log in once on a loaded machine
        token = claims.create_token(db, settings, "ESP32_GENERIC", uses=5, hours=lifetime / 3600)
        token_id, secret = token.split(".")
        expires = identity_store.get_claim_token(db, token_id)["expires"]
        thread.start()
        first = _claim_connack(claim_port, token_id, secret)
        assert time.time() < expires, "the machine was too slow to log in before the expiry"
        assert first is not None and not first.is_failure, first
        assert identity_store.next_claim_token_expiry(db) == expires
        # No other change: no new token, no claim, no CLI. The broker must refuse it after expiry.
        assert wait_until(lambda: (tmp_path / "data" / "broker" / "claim_passwd").read_text()
                          == "", timeout=lifetime + 60)
        assert time.time() >= expires

        def refused():
            rc = _claim_connack(claim_port, token_id, secret)
            return rc is not None and rc.is_failure

        assert wait_until(refused, timeout=30)  # once mosquitto handled its SIGHUP
        assert worker.rounds == 2 and identity_store.next_claim_token_expiry(db) is None
    finally:
        stopping.set()
        thread.join(30)
        broker.stop()
        db.conn.close()


def test_a_held_lock_stays_with_its_holder_until_it_lets_go_or_its_lease_runs_out(settings, db):
    """store/upkeep.py's Held (the provider workers' lock): one holder at a time, on both stores."""
    other = open_db(settings.db_path)
    try:
        mine = upkeep_store.Held(db, "provider:ttn", lease=0.5)
        theirs = upkeep_store.Held(other, "provider:ttn", lease=0.5)
        assert mine.renew() and mine.renew()  # taken, then kept (not stacked: one release frees)
        assert not theirs.renew()
        assert upkeep_store.Held(other, "provider:cs").renew()  # another name is another lock
        mine.release()
        assert theirs.renew() and not mine.renew()
        if db.dialect == "sqlite":
            # A holder that died keeps its row until the lease runs out; then another takes it.
            time.sleep(0.6)
            assert mine.renew() and not theirs.renew()
    finally:
        other.conn.close()
