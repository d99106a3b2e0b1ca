"""The provider ingest worker against a real mosquitto standing in for TTS and ChirpStack.

The fixtures' JSON (the providers' documented shapes) is published on the providers' topics; the
worker stores each frame once per (node, seq) with every reception's radio metadata.
"""

import base64
import json
import os
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from polylink import proto

from fleet.nodes import commands as downlink
from fleet.providers import downlinks, registry, worker
from fleet.settings import Settings
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import providers as provider_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db

FIX = Path(__file__).parent / "fixtures"


def store_settings(tmp_path, mqtt_port):
    """Settings on the run's store: DATABASE_URL with --backend=postgresql, else a SQLite file."""
    return Settings(tmp_path, 0, mqtt_port, None, database_url=os.environ.get("DATABASE_URL"))
DEV_EUI = "02A1B2C3D4E5F601"


def _publish(broker, items):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-provider-pub")
    c.connect(broker.host, broker.port)
    c.loop_start()
    for topic, payload in items:
        info = c.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def _wait(pred, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_same_frame_via_tts_and_chirpstack_is_stored_once_with_both_receptions(
        tmp_path, mosquitto):
    settings = store_settings(tmp_path, mosquitto.port)
    db = open_db(settings.db_path)
    identity_store.register_node(db, "lamp-7", {"mqtt_user": "lamp-7", "mqtt_hash": "x",
                                                "dev_eui": DEV_EUI})
    for name, kind, app in (("ttn", "tts", "polylink-city"), ("cs", "chirpstack", "7b0c")):
        registry.add(db, tmp_path, {"name": name, "kind": kind, "host": mosquitto.host,
                                    "port": mosquitto.port, "application": app}, "s3cret")
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(settings, stop), daemon=True)
    t.start()
    try:
        time.sleep(1.0)  # subscriptions in place (clean_session=False would also keep them)
        tts_msg = (FIX / "tts_uplink.json").read_bytes()
        cs_msg = (FIX / "chirpstack_uplink.json").read_bytes()
        unknown = json.loads(tts_msg)
        unknown["end_device_ids"]["dev_eui"] = "0102030405060708"
        _publish(mosquitto, [
            ("v3/polylink-city@ttn/devices/pl-lamp-7/up", tts_msg),
            ("application/7b0c/device/02a1b2c3d4e5f601/event/up", cs_msg),
            ("v3/polylink-city@ttn/devices/stranger/up", json.dumps(unknown).encode()),
        ])
        assert _wait(lambda: telemetry_store.count_frames(db, "lamp-7") == 1
                     and len(provider_store.receptions(db, "lamp-7")) == 3
                     and telemetry_store.bad_frames(db))
    finally:
        stop.set()
        t.join(10)
    rx = provider_store.receptions(db, "lamp-7")
    assert {(r["provider"], r["gateway"], r["rssi"], r["sf"], r["freq"]) for r in rx} == {
        ("ttn", "eui-aa555a0000000101", -68, 7, 868100000),
        ("ttn", "city-hall-gw", -112, 7, 868100000),
        ("cs", "0016c001f153a14c", -36, 7, 868500000)}
    assert {r["seq"] for r in rx} == {5}
    assert telemetry_store.count_readings(db, "lamp-7") == 3  # one frame's readings, not two
    ids = {(i["provider"], i["ext_id"], i["device_id"])
           for i in provider_store.identities(db, "lamp-7")}
    assert ids == {("ttn", DEV_EUI, "pl-lamp-7"), ("cs", DEV_EUI, "02a1b2c3d4e5f601")}
    bad = telemetry_store.bad_frames(db)
    assert any("0102030405060708" in b["error"] for b in bad)
    # the password is stored encrypted, never in clear, and not in what the registry lists
    raw = list(db.query("SELECT secret FROM providers"))
    assert all(b"s3cret" not in r["secret"] for r in raw)
    assert "s3cret" not in json.dumps(registry.list_all(db))
    assert registry.login(db, tmp_path, "ttn")[1] == "s3cret"


def test_downlink_goes_through_the_provider_last_heard_on_within_its_limits(tmp_path, mosquitto):
    settings = store_settings(tmp_path, mosquitto.port)
    db = open_db(settings.db_path)
    identity_store.register_node(db, "lamp-7", {"mqtt_user": "lamp-7", "mqtt_hash": "x",
                                                "dev_eui": DEV_EUI})
    registry.add(db, tmp_path, {"name": "ttn", "kind": "tts", "host": mosquitto.host,
                                "port": mosquitto.port, "application": "polylink-city",
                                "downlinks_per_day": 2}, None)
    got = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-provider-sub")
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe([("v3/+/devices/+/down/push", 1), ("pl/v1/+/down", 1)])
    sub.loop_start()
    try:
        ing = worker.ProviderIngest(db, "ttn", "tts")
        msg = json.loads((FIX / "tts_uplink.json").read_bytes())
        msg["uplink_message"]["settings"]["data_rate"]["lora"]["spreading_factor"] = 12
        ing.add_message("v3/polylink-city@ttn/devices/pl-lamp-7/up", json.dumps(msg).encode(),
                        time.time())
        ing.flush()
        assert node_store.get_node(db, "lamp-7")["provider"] == "ttn"
        cid = downlink.send_command(db, settings, "lamp-7", "identify")
        assert _wait(lambda: got)
        topic, body = got[0]
        assert topic == "v3/polylink-city@ttn/devices/pl-lamp-7/down/push"
        frame = base64.b64decode(body["downlinks"][0]["frm_payload"])
        mtype, _seq, _ts, cmd = proto.decode(frame)
        assert (mtype, cmd["cid"], body["downlinks"][0]["f_port"]) == (proto.COMMAND, cid, 1)
        # DR0 (SF12) carries 51 bytes at most: a bigger frame is refused, not truncated
        with pytest.raises(downlink.TooLarge, match="DR0"):
            downlinks.send(db, settings, "lamp-7", bytes(60))
        downlink.send_command(db, settings, "lamp-7", "identify")
        with pytest.raises(downlink.BudgetUsed, match="2 downlinks"):
            downlink.send_command(db, settings, "lamp-7", "identify")
        assert downlinks.used_today(db, "lamp-7", "ttn") == (2, 0)
        assert downlinks.used_today(db, "lamp-7", "ttn", now=time.time() + 86400) == (0, 0)
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_node_page_shows_receptions_and_networks(tmp_path):
    from fleet import create_app
    from fleet.web.auth import create_user

    settings = store_settings(tmp_path, 1)
    db = open_db(settings.db_path)
    identity_store.register_node(db, "lamp-7", {"mqtt_user": "lamp-7", "mqtt_hash": "x",
                                                "dev_eui": DEV_EUI})
    ing = worker.ProviderIngest(db, "ttn", "tts")
    ing.add_message("v3/polylink-city@ttn/devices/pl-lamp-7/up",
                    (FIX / "tts_uplink.json").read_bytes(), time.time())
    ing.flush()
    create_user(db, "vera", "correct horse", "viewer")
    client = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "t",
                         "WTF_CSRF_ENABLED": False}).test_client()
    client.post("/auth/login", data={"username": "vera", "password": "correct horse"})
    page = client.get("/nodes/lamp-7").get_data(as_text=True)
    assert "Last heard on <strong>ttn</strong>" in page
    assert "ttn 02A1B2C3D4E5F601" in page
    assert "eui-aa555a0000000101" in page and "-68" in page and "868.1 MHz" in page
    assert "SF7 / DR5" in page and "62 ms" in page
    # which provider carried each reading
    assert '<td>5</td><td>TELEMETRY</td><td>ttn</td><td class="wide">2</td>' in page


def test_worker_picks_up_a_provider_added_while_it_runs(tmp_path, mosquitto, monkeypatch):
    monkeypatch.setattr(worker, "RELOAD_S", 0.3)
    settings = store_settings(tmp_path, mosquitto.port)
    db = open_db(settings.db_path)
    identity_store.register_node(db, "lamp-7", {"mqtt_user": "lamp-7", "mqtt_hash": "x",
                                                "dev_eui": DEV_EUI})
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(settings, stop), daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        registry.add(db, tmp_path, {"name": "cs", "kind": "chirpstack", "host": mosquitto.host,
                                    "port": mosquitto.port, "application": "7b0c"}, None)
        time.sleep(1.5)
        _publish(mosquitto, [("application/7b0c/device/02a1b2c3d4e5f601/event/up",
                              (FIX / "chirpstack_uplink.json").read_bytes())])
        assert _wait(lambda: telemetry_store.count_frames(db, "lamp-7") == 1)
    finally:
        stop.set()
        t.join(10)
