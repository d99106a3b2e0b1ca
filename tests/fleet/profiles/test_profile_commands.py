"""A profile's downlink commands: encoded by the vendor codec's encodeDownlink, queued with the
LoRaWAN provider the device was last heard on (a real mosquitto stands in for TTS's broker)."""

import base64
import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet.nodes import commands
from fleet.profiles import devices, service
from fleet.providers import registry
from fleet.providers.worker import ProviderIngest
from fleet.settings import Settings
from fleet.store import audit as audit_store
from fleet.store.migrate import open_db

CODECS = Path(__file__).parent / "codecs"
EUI = "70B3D57ED0001002"


def test_profile_command_goes_out_through_the_provider(tmp_path, mosquitto, database_url):
    settings = Settings(tmp_path, 0, mosquitto.port, None, database_url=database_url)
    db = open_db(settings.db_path)
    registry.add(db, tmp_path, {"name": "ttn", "kind": "tts", "host": mosquitto.host,
                                "port": mosquitto.port, "application": "city"}, "pw")
    service.save(db, {"name": "acme", "codec": "js", "source": (CODECS / "vendor_weather.js")
                      .read_text(), "commands": [{"name": "set-interval",
                                                  "data": {"interval": 900}}]})
    node = devices.register(db, EUI, "acme")
    got = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tts-side")
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("v3/city@ttn/devices/+/down/push", 1)
    sub.loop_start()
    try:
        with pytest.raises(commands.BadCommand, match="not heard through a LoRaWAN provider"):
            commands.send_profile_command(db, settings, node, "set-interval")
        w = ProviderIngest(db, "ttn", "tts")
        up = {"f_port": 2, "f_cnt": 1,
              "frm_payload": base64.b64encode(bytes.fromhex("02D227953010B8")).decode()}
        w.add_message("v3/city@ttn/devices/wx/up", json.dumps({
            "end_device_ids": {"device_id": "wx", "dev_eui": EUI}, "uplink_message": up}).encode(),
            time.time())
        w.flush()
        time.sleep(0.3)
        sent = commands.send_profile_command(db, settings, node, "set-interval",
                                             {"interval": 600}, actor="tech")
        assert sent == {"command": "set-interval", "data": {"interval": 600}, "fport": 10,
                        "payload": "010258"}
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        topic, msg = got[0]
        assert topic == "v3/city@ttn/devices/wx/down/push"
        assert msg["downlinks"][0]["f_port"] == 10
        assert base64.b64decode(msg["downlinks"][0]["frm_payload"]) == b"\x01\x02\x58"
        assert audit_store.audit_log(db, target=node)[0]["action"] == "node.profile_command"
        with pytest.raises(commands.BadCommand, match="has no command 'reboot'"):
            commands.send_profile_command(db, settings, node, "reboot")
        with pytest.raises(commands.BadCommand, match="interval .seconds. is required"):
            commands.send_profile_command(db, settings, node, "set-interval",
                                          {"interval": None})
    finally:
        sub.loop_stop()
        sub.disconnect()
        db.conn.close()


def test_technician_sends_a_profile_command_from_the_node_page(tmp_path, mosquitto, form_token):
    from fleet import create_app
    from fleet.web import auth

    settings = Settings(tmp_path, 0, mosquitto.port, None)
    db = open_db(settings.db_path)
    app = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "test"})
    registry.add(db, tmp_path, {"name": "ttn", "kind": "tts", "host": mosquitto.host,
                                "port": mosquitto.port, "application": "city"}, "pw")
    service.save(db, {"name": "acme", "codec": "js", "source": (CODECS / "vendor_weather.js")
                      .read_text(), "commands": [{"name": "set-interval",
                                                  "data": {"interval": 900}}]})
    node = devices.register(db, EUI, "acme")
    clients = {}
    for role in ("technician", "viewer"):
        auth.create_user(db, role, "a-long-password", role)
        c = clients[role] = app.test_client()
        c.post("/auth/login", data={"username": role, "password": "a-long-password",
                                    "csrf_token": form_token(c, "/auth/login")})
    tech = clients["technician"]
    url = f"/nodes/{node}/profile-commands"
    page = tech.get(f"/nodes/{node}").get_data(as_text=True)
    assert 'action="/nodes/70b3d57ed0001002/profile-commands"' in page
    assert 'value="set-interval"' in page and "{&#34;interval&#34;: 900}" in page
    assert f'action="/nodes/{node}/commands"' not in page  # no Polylink commands for it
    assert f'action="/nodes/{node}/config"' not in page and "takes no Polylink CONFIG" in page
    viewer_page = clients["viewer"].get(f"/nodes/{node}").get_data(as_text=True)
    assert "its codec encodes these commands" in viewer_page
    assert f'action="{url}"' not in viewer_page
    csrf = form_token(tech, f"/nodes/{node}")
    r = clients["viewer"].post(url, data={"command": "set-interval",
                                          "csrf_token": form_token(clients["viewer"], "/nodes/")})
    assert r.status_code == 403

    def send(**form):
        r = tech.post(url, data=dict(form, csrf_token=csrf), follow_redirects=True)
        return r.get_data(as_text=True)

    assert "not heard through a LoRaWAN provider" in send(command="set-interval")
    w = ProviderIngest(db, "ttn", "tts")
    up = {"f_port": 2, "f_cnt": 1,
          "frm_payload": base64.b64encode(bytes.fromhex("02D227953010B8")).decode()}
    w.add_message("v3/city@ttn/devices/wx/up", json.dumps({
        "end_device_ids": {"device_id": "wx", "dev_eui": EUI}, "uplink_message": up}).encode(),
        time.time())
    w.flush()
    got = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tts-side-page")
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("v3/city@ttn/devices/+/down/push", 1)
    sub.loop_start()
    try:
        time.sleep(0.3)
        assert "data is not JSON" in send(command="set-interval", data="{interval: 600")
        assert "has no command &#39;reboot&#39;" in send(command="reboot")
        text = send(command="set-interval", data='{"interval": 600}')
        assert "Command set-interval queued: 3 bytes on fPort 10 (010258)" in text
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert base64.b64decode(got[0]["downlinks"][0]["frm_payload"]) == b"\x01\x02\x58"
        entry = audit_store.audit_log(db, target=node)[0]
        assert (entry["action"], entry["actor"]) == ("node.profile_command", "technician")
    finally:
        sub.loop_stop()
        sub.disconnect()
        db.conn.close()
