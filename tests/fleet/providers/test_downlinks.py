"""The daily downlink budget counts the network's ACKs of confirmed uplinks (downlinks.py).

The providers' documented JSON (fixtures/) goes through the real ingest code into a real SQLite;
a confirmed uplink is the same message with the `confirmed` field both providers add when true.
"""

import json
import os
import socket
import time
from pathlib import Path

import pytest

from fleet import create_app
from fleet.nodes import commands as downlink
from fleet.providers import downlinks, registry, worker
from fleet.settings import Settings
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store import providers as provider_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import transaction
from fleet.store.migrate import open_db
from fleet.web.auth import create_token, create_user

FIX = Path(__file__).parent / "fixtures"


def store_settings(tmp_path, mqtt_port):
    """Settings on the run's store: DATABASE_URL with --backend=postgresql, else a SQLite file."""
    return Settings(tmp_path, 0, mqtt_port, None, database_url=os.environ.get("DATABASE_URL"))
DEV_EUI = "02A1B2C3D4E5F601"
TTS_TOPIC = "v3/polylink-city@ttn/devices/pl-lamp-7/up"
CS_TOPIC = "application/7b0c/device/02a1b2c3d4e5f601/event/up"


def _tts(confirmed=True, fcnt=None, payload=None):
    msg = json.loads((FIX / "tts_uplink.json").read_bytes())
    up = msg["uplink_message"]
    if confirmed:
        up["confirmed"] = True
    if fcnt is not None:
        up["f_cnt"] = fcnt
    if payload is not None:
        up["frm_payload"] = payload
    return json.dumps(msg).encode()


def _cs(confirmed=True, fcnt=None):
    msg = json.loads((FIX / "chirpstack_uplink.json").read_bytes())
    if confirmed:
        msg["confirmed"] = True
    if fcnt is not None:
        msg["fCnt"] = fcnt
    return json.dumps(msg).encode()


@pytest.fixture
def fleet(tmp_path):
    settings = store_settings(tmp_path, 1)  # no broker: a refused downlink never connects
    db = open_db(settings.db_path)
    identity_store.register_node(db, "lamp-7", {"mqtt_user": "lamp-7", "mqtt_hash": "x",
                                                "dev_eui": DEV_EUI})
    registry.add(db, tmp_path, {"name": "ttn", "kind": "tts", "host": "localhost",
                                "application": "polylink-city", "downlinks_per_day": 3}, None)
    registry.add(db, tmp_path, {"name": "cs", "kind": "chirpstack", "host": "localhost",
                                "application": "7b0c"}, None)
    return settings, db


def _ingest(db, name, kind, messages, t=None):
    ing = worker.ProviderIngest(db, name, kind)
    for topic, payload in messages:
        ing.add_message(topic, payload, time.time() if t is None else t)
    ing.flush()
    return ing


def test_fixtures_leave_confirmed_out_when_false(fleet):
    settings, db = fleet
    assert "confirmed" not in json.loads(_tts(confirmed=False))["uplink_message"]
    assert "confirmed" not in json.loads(_cs(confirmed=False))
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(confirmed=False))])
    _ingest(db, "cs", "chirpstack", [(CS_TOPIC, _cs(confirmed=False))])
    assert telemetry_store.count_frames(db, "lamp-7") == 1
    assert downlinks.used_today(db, "lamp-7", "ttn") == (0, 0)
    assert downlinks.used_today(db, "lamp-7", "cs") == (0, 0)


def test_one_ack_per_confirmed_uplink_however_often_it_is_heard(fleet):
    settings, db = fleet
    # two gateways in one TTS message, the same message redelivered by the broker (QoS 1 after
    # a restart) and in a later batch: one uplink, one ACK
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(fcnt=7)), (TTS_TOPIC, _tts(fcnt=7))])
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(fcnt=7))])
    # 2 gateways; the redeliveries are the same message (its as:up correlation id)
    assert len(provider_store.receptions(db, "lamp-7")) == 2
    assert downlinks.used_today(db, "lamp-7", "ttn") == (1, 1)
    # the node sent the same frame (seq) again as a new uplink (new FCnt) after giving up on
    # the ACK: the network acknowledged that one too
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(fcnt=8))])
    assert downlinks.used_today(db, "lamp-7", "ttn") == (2, 2)
    assert telemetry_store.count_frames(db, "lamp-7") == 1  # still one frame for the fleet
    # the same frame heard on ChirpStack was ACKed by that network: its own budget
    _ingest(db, "cs", "chirpstack", [(CS_TOPIC, _cs())])
    assert downlinks.used_today(db, "lamp-7", "cs") == (1, 1)
    assert downlinks.used_today(db, "lamp-7", "ttn") == (2, 2)
    # a confirmed uplink whose frame is not Polylink's was still ACKed by the network
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(fcnt=9, payload="AAAA"))])
    assert telemetry_store.bad_frames(db)
    assert downlinks.used_today(db, "lamp-7", "ttn") == (3, 3)
    # ACKs of yesterday do not count today
    assert downlinks.used_today(db, "lamp-7", "ttn", now=time.time() + 86400) == (0, 0)


def test_downlink_refused_when_acks_used_the_budget_says_why(fleet, tmp_path):
    settings, db = fleet
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(fcnt=n)) for n in (1, 2, 3)])
    assert node_store.get_node(db, "lamp-7")["provider"] == "ttn"
    with pytest.raises(downlink.BudgetUsed) as e:
        downlink.send_command(db, settings, "lamp-7", "identify")
    msg = str(e.value)
    assert "used 3 of its 3 downlinks" in msg and "provider ttn" in msg
    assert "3 of them the network's ACKs of confirmed uplinks, 0 sent by the fleet" in msg
    # a downlink the fleet sent earlier is told apart from the ACKs
    with transaction(db) as conn:
        conn.execute("DELETE FROM provider_downlinks WHERE fcnt = 3")
        conn.execute("INSERT INTO provider_downlinks (node_id, provider, t, size) VALUES"
                     " ('lamp-7', 'ttn', ?, 12)", (time.time(),))
    with pytest.raises(downlink.BudgetUsed, match="2 of them the network's ACKs of confirmed"
                                                   " uplinks, 1 sent by the fleet"):
        downlinks.send(db, settings, "lamp-7", b"\x00")
    assert downlinks.budgets(db, "lamp-7") == [
        {"provider": "ttn", "limit": 3, "used": 3, "acks": 2, "left": 0}]

    # the REST API refuses with 429 and the reason; its radio view shows the budget
    app = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "t",
                      "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    h = {"Authorization": "Bearer " + create_token(db, "budget", role="operator")}
    r = client.post("/api/v1/nodes/lamp-7/commands", json={"command": "identify"}, headers=h)
    assert r.status_code == 429
    assert "ACKs of confirmed uplinks" in r.get_data(as_text=True)
    r = client.get("/api/v1/nodes/lamp-7/receptions", headers=h)
    assert r.json["downlink_budget"] == [
        {"provider": "ttn", "limit": 3, "used": 3, "acks": 2, "left": 0}]
    # and the node page, in words
    create_user(db, "vera", "correct horse", "viewer")
    client.post("/auth/login", data={"username": "vera", "password": "correct horse"})
    page = client.get("/nodes/lamp-7").get_data(as_text=True)
    assert "ttn: 3 of 3 used, 2 by ACKs of confirmed uplinks" in page


def test_budget_with_room_left_lets_the_downlink_through_to_the_check_after_it(fleet):
    settings, db = fleet
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(fcnt=1))])
    assert downlinks.describe(downlinks.budgets(db, "lamp-7")[0]) == (
        "1 of 3 used, 1 by ACKs of confirmed uplinks")
    # not refused for budget: it gets as far as the size check (DR5 here: 222 bytes at most)
    with pytest.raises(downlink.TooLarge):
        downlinks.send(db, settings, "lamp-7", bytes(300))


def test_an_organisations_daily_downlink_quota_is_shared_by_its_nodes_and_says_why(fleet):
    """Issue 18: the network's budget shared fairly. The node has room on its provider (1 of 3
    used), but its organisation used its quota of 1 for today."""
    settings, db = fleet
    orgs.add_organisation(db, "parking", max_downlinks_per_day=1)
    orgs.move_node(db, "lamp-7", "parking")
    _ingest(db, "ttn", "tts", [(TTS_TOPIC, _tts(fcnt=1))])  # the network ACKed it: 1 used
    with pytest.raises(downlinks.OrganisationQuotaUsed,
                       match="organisation parking used 1 of its 1 LoRaWAN downlinks for today"):
        downlinks.send(db, settings, "lamp-7", b"\x00")
    app = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "t",
                      "WTF_CSRF_ENABLED": False})
    h = {"Authorization": "Bearer " + create_token(db, "quota", role="operator")}
    r = app.test_client().post("/api/v1/nodes/lamp-7/commands", json={"command": "identify"},
                               headers=h)
    assert r.status_code == 429 and "its quota" in r.get_data(as_text=True)
    # Tomorrow, or with a larger quota, it gets past the quota: on to the provider's broker,
    # which here is a port nobody listens on.
    assert provider_store.org_downlinks_since(db, "lamp-7", time.time() + 86400) == 0
    orgs.set_quotas(db, "parking", max_downlinks_per_day=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with transaction(db) as conn:
        conn.execute("UPDATE providers SET host = '127.0.0.1', port = ? WHERE name = 'ttn'",
                     (closed,))
    with pytest.raises(downlink.BrokerUnavailable, match="cannot reach provider ttn"):
        downlinks.send(db, settings, "lamp-7", b"\x00")
