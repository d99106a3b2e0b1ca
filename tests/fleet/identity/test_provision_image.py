"""A node's filesystem image from the web UI and the API: built, read back, password rotated."""

import json
import re

from fleet.broker import auth as brokerauth
from fleet.identity import provision
from fleet.store import audit as audit_store
from fleet.store import identity as identity_store
from provisioning import image


def _config(data: bytes) -> dict:
    files = image.read_back(data)
    assert "polylink/node.mpy" in files and "main.py" in files and "board.json" in files
    return json.loads(files["config.json"])


def test_ui_image_download_carries_a_new_working_password(logged_in, form_token, db):
    c = logged_in
    old = provision.register(db, c.application.config["SETTINGS"], "lamp-7",
                             board="ESP32_GENERIC")["mqtt"]["password"]
    page = c.get("/provision/").get_data(as_text=True)
    assert 'id="image"' in page and '<option value="lamp-7"' in page
    csrf = form_token(c, "/provision/")
    form = {"node": "lamp-7", "mqtt_host": "10.0.0.2", "mqtt_port": "1883",
            "wifi_ssid": "city-iot", "wifi_password": "s3cret-wifi"}
    assert c.post("/provision/image", data=form).status_code == 400  # no CSRF token
    r = c.post("/provision/image", data={**form, "csrf_token": csrf})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert r.headers["Content-Disposition"] == \
        'attachment; filename="lamp-7.ESP32_GENERIC.littlefs.bin"'
    data = r.get_data()
    assert len(data) == 0x200000  # exactly the board's vfs partition
    cfg = _config(data)
    assert cfg["node"] == "lamp-7" and cfg["mqtt"]["host"] == "10.0.0.2"
    assert cfg["wifi"] == {"ssid": "city-iot", "password": "s3cret-wifi"}
    stored = identity_store.active_mqtt_hashes(db)["lamp-7"]
    assert brokerauth.verify_password(cfg["mqtt"]["password"], stored)
    assert not brokerauth.verify_password(old, stored), "the old image stops working"
    entry = audit_store.audit_log(db, target="lamp-7")[0]
    assert entry["action"] == "node.image" and entry["actor"] == "alice"
    assert "s3cret-wifi" not in json.dumps(audit_store.audit_log(db))  # no secret in the audit log


def test_a_failed_image_says_why_and_keeps_the_password(logged_in, form_token, db):
    c = logged_in
    settings = c.application.config["SETTINGS"]
    provision.register(db, settings, "lamp-8", board="ESP32_GENERIC")
    provision.register(db, settings, "no-board")
    provision.register(db, settings, "gone", board="ESP32_GENERIC")
    provision.revoke(db, settings, "gone")
    before = identity_store.active_mqtt_hashes(db)["lamp-8"]
    csrf = form_token(c, "/provision/")
    for form, words in (
        ({"node": "lamp-8", "mqtt_host": "127.0.0.1"}, "not 127.0.0.1"),
        ({"node": "lamp-8", "mqtt_host": ""}, "where the node finds the broker"),
        ({"node": "lamp-8", "mqtt_host": "10.0.0.2", "mqtt_port": "x"}, "not a number"),
        ({"node": "lamp-8", "mqtt_host": "10.0.0.2", "mqtt_port": "70000"}, "outside"),
        ({"node": "no-board", "mqtt_host": "10.0.0.2"}, "has no board"),
        ({"node": "gone", "mqtt_host": "10.0.0.2"}, "no active credentials"),
        ({"node": "lamp-8", "mqtt_host": "10.0.0.2", "wifi_password": "x" * 3_000_000},
         "do not fit"),
    ):
        r = c.post("/provision/image", data={**form, "csrf_token": csrf}, follow_redirects=True)
        assert r.status_code == 200 and r.mimetype == "text/html"
        assert words in r.get_data(as_text=True), (form, words)
    assert identity_store.active_mqtt_hashes(db)["lamp-8"] == before


def test_only_technicians_and_up_download_images(client, db, form_token):
    from fleet.web.auth import create_token, create_user

    provision.register(db, client.application.config["SETTINGS"], "lamp-9",
                       board="ESP32_GENERIC")
    before = identity_store.active_mqtt_hashes(db)["lamp-9"]
    viewer = create_token(db, "viewer-script", "viewer")
    r = client.post("/api/v1/nodes/lamp-9/image", json={"mqtt_host": "10.0.0.2"},
                    headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    create_user(db, "val", "long enough pw", "viewer")
    client.post("/auth/login", data={"username": "val", "password": "long enough pw",
                                     "csrf_token": form_token(client, "/auth/login")})
    csrf = re.search(r'name="csrf_token" value="([^"]+)"',
                     client.get("/nodes/").get_data(as_text=True)).group(1)
    assert client.post("/provision/image", data={"node": "lamp-9", "mqtt_host": "10.0.0.2",
                                                 "csrf_token": csrf}).status_code == 403
    assert identity_store.active_mqtt_hashes(db)["lamp-9"] == before


def test_api_image(client, db, auth_headers):
    provision.register(db, client.application.config["SETTINGS"], "lamp-10",
                       board="ESP32_GENERIC")
    r = client.post("/api/v1/nodes/lamp-10/image",
                    json={"mqtt_host": "broker.city", "mqtt_port": 8883}, headers=auth_headers)
    assert r.status_code == 200 and r.mimetype == "application/octet-stream"
    cfg = _config(r.get_data())
    assert (cfg["mqtt"]["host"], cfg["mqtt"]["port"]) == ("broker.city", 8883)
    assert brokerauth.verify_password(cfg["mqtt"]["password"],
                                      identity_store.active_mqtt_hashes(db)["lamp-10"])
    for body, status, words in (
        ({"mqtt_host": "h", "colour": 1}, 400, "unknown field"),
        ({"mqtt_host": "h", "mqtt_port": "1883"}, 400, "must be an integer"),
        ({"mqtt_host": 5}, 400, "must be a string"),
        ({}, 400, "where the node finds the broker"),
    ):
        r = client.post("/api/v1/nodes/lamp-10/image", json=body, headers=auth_headers)
        assert r.status_code == status and words in r.json["error"], (body, r.json)
    r = client.post("/api/v1/nodes/nope/image", json={"mqtt_host": "h"}, headers=auth_headers)
    assert r.status_code == 404
