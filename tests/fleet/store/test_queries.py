"""Queries of the store's domain modules (moved from tests/fleet/test_db.py)."""


import pytest
from polylink import proto

from fleet.ingest import Ingest
from fleet.store import alerts as alert_store
from fleet.store import audit as audit_store
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store import users as user_store
from fleet.store.base import DuplicateName, IntegrityError, UnknownCommand, UnknownNode


def test_frames_are_unique_per_node_direction_and_seq(db):
    node_store.enrol_node(db, "n1")
    db.conn.execute("INSERT INTO frames VALUES ('n1', 'up', 7, 0, 1.0, NULL, 'mqtt')")
    db.conn.execute("INSERT INTO frames VALUES ('n1', 'down', 7, 4, 1.0, NULL, 'mqtt')")
    with pytest.raises(IntegrityError):
        db.conn.execute("INSERT INTO frames VALUES ('n1', 'up', 7, 0, 2.0, NULL, 'ttn')")


def test_unknown_node_and_command_raise_named_errors(db):
    with pytest.raises(UnknownNode):
        node_store.get_node(db, "nope")
    node_store.enrol_node(db, "n1")
    with pytest.raises(UnknownCommand):
        command_store.get_command(db, "n1", 99)


def test_commands_take_increasing_downlink_seqs(db):
    node_store.enrol_node(db, "n1")
    first = command_store.create_command(db, "n1", "reboot", None, "me")
    second = command_store.create_command(db, "n1", "identify", None, "me")
    assert second[0] > first[0] and second[1] == first[1] + 1
    assert [e["action"] for e in audit_store.audit_log(db)][:2] == ["command", "command"]


def test_readings_window_and_limit(db):
    node_store.enrol_node(db, "n1")
    db.conn.executemany(
        "INSERT INTO readings (node_id, t, qid, inst, value) VALUES ('n1', ?, 0, 0, ?)",
        [(float(t), float(t)) for t in range(10)],
    )
    assert [r[0] for r in telemetry_store.readings(db, "n1", limit=3)] == [7.0, 8.0, 9.0]
    assert [r[0] for r in telemetry_store.readings(db, "n1", since=2, until=4)] == [2.0, 3.0, 4.0]
    assert telemetry_store.readings(db, "n1", qids=[1]) == []


def test_duplicate_user_and_token_names(db):
    user_store.add_user(db, "bob", "hash", "operator")
    with pytest.raises(DuplicateName):
        user_store.add_user(db, "bob", "hash", "operator")
    user_store.add_token(db, "t", "secret-1")
    with pytest.raises(DuplicateName):
        user_store.add_token(db, "t", "secret-2")
    assert user_store.token_name(db, "secret-1") == "t"
    assert user_store.token_name(db, "secret-2") is None
    # Only the hash is stored.
    assert "secret-1" not in str(list(db.query("SELECT * FROM api_tokens")))


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
    node = node_store.get_node(db, "n1")
    assert {k: node[k] for k in ("uptime", "reset_cause", "heap_free", "rssi", "queue", "dropped",
                                 "boots", "interval", "micropython_version")} == {
        "uptime": 33, "reset_cause": 3, "heap_free": 81920, "rssi": -67, "queue": 2,
        "dropped": 4, "boots": 10, "interval": 60, "micropython_version": "1.24.1"}
    alert_store.evaluate_alerts(db, now + 300)
    assert [a["kind"] for a in alert_store.list_alerts(db, "n1")] == ["boot_loop"]
    # The log keeps what each STATUS said: a compact one has no heap reading to chart.
    log = telemetry_store.status_history(db, "n1", 0)
    assert [r["heap_free"] for r in log[:2]] == [None, 81920]


def test_frames_lost_on_the_node_are_kept_shown_and_raise_an_alert(db):
    ing = Ingest(db)
    now = 20_000.0
    ing.add("pl/v1/n1/up", _status(0, uptime=3, lost=0), now)
    ing.add("pl/v1/n2/up", _status(0, uptime=3, lost=0), now)
    ing.add("pl/v1/n2/up", _status(1, uptime=33, lost=5), now + 30)
    ing.add("pl/v1/n2/up", _status(2, uptime=63), now + 60)  # a compact STATUS keeps the count
    ing.flush()
    assert (node_store.get_node(db, "n1")["lost"], node_store.get_node(db, "n2")["lost"]) == (0, 5)
    alert_store.evaluate_alerts(db, now + 120)
    (alert,) = alert_store.list_alerts(db)
    assert (alert["node_id"], alert["kind"]) == ("n2", "frames_lost")
    assert alert["detail"].startswith("5 frames lost")
    alert_store.evaluate_alerts(db, now + 30 + 3601)  # an hour without a loss clears it
    assert [a for a in alert_store.list_alerts(db) if a["kind"] == "frames_lost"] == []
