"""Registering nodes through the library, the CLI, the API and the UI; secrets once, hashes kept."""

import json
import re

import pytest

from fleet.broker import auth as brokerauth
from fleet.cli import cli
from fleet.identity import provision
from fleet.store import identity as identity_store
from fleet.tls import certs


def test_radio_board_gets_lorawan_keys_and_wifi_board_none(db, settings):
    radio = provision.register(db, settings, "lora-1", board="HELTEC_V3")
    wifi = provision.register(db, settings, "wifi-1", board="ESP32_GENERIC")
    lw = radio["lorawan"]
    assert re.fullmatch(r"[0-9A-F]{16}", lw["dev_eui"]) and int(lw["dev_eui"][:2], 16) & 0x03 == 2
    assert re.fullmatch(r"[0-9A-F]{32}", lw["app_key"]) and lw["join_eui"] == "0000000000000000"
    assert wifi["lorawan"] is None
    assert identity_store.get_credentials(db, "lora-1")["dev_eui"] == lw["dev_eui"]
    assert "app_key" not in identity_store.get_credentials(db, "lora-1")
    # The broker files follow the store.
    text = (settings.broker_dir / "passwd").read_text()
    assert "lora-1:$7$" in text and "wifi-1:$7$" in text and "polylink-ingest:$7$" in text


def test_ota_keys_come_from_the_fleets_trusted_key_file(db, settings):
    path = settings.data_dir / "ota" / "trusted_keys.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"release-2026": "ab" * 32}))
    assert provision.register(db, settings, "n-1")["ota"] == {"keys": {"release-2026": "ab" * 32}}
    identity = provision.register(db, settings, "n-2", board="HELTEC_V3")
    cfg = provision.node_config(identity, "broker.city", 1883)
    assert cfg["ota"]["keys"] == {"release-2026": "ab" * 32} and "lorawan" in cfg


def test_ota_file_login_is_not_the_mqtt_password_and_each_works_only_where_it_belongs(
        db, settings):
    identity = provision.register(db, settings, "n-3")
    mqtt_password = identity["mqtt"]["password"]
    file_login = provision.node_config(identity, "broker.city", 1883)["ota"]["password"]
    assert file_login != mqtt_password and mqtt_password not in file_login
    node, file_hash = identity_store.node_login_hash(db, "n-3")
    assert node == "n-3"
    assert brokerauth.verify_password(file_login, file_hash)
    assert not brokerauth.verify_password(mqtt_password, file_hash)
    mqtt_hash = identity_store.active_mqtt_hashes(db)["n-3"]
    assert brokerauth.verify_password(mqtt_password, mqtt_hash)
    assert not brokerauth.verify_password(file_login, mqtt_hash)
    # A rotation changes both: the old file login stops working with the old MQTT password.
    new = provision.rotate(db, settings, "n-3")
    _, file_hash = identity_store.node_login_hash(db, "n-3")
    assert not brokerauth.verify_password(file_login, file_hash)
    assert brokerauth.verify_password(provision.node_config(
        {**identity, "mqtt": {"user": "n-3", "password": new}}, "b", 1)["ota"]["password"],
        file_hash)


def test_images_trust_the_fleet_ca_and_use_tls_once_it_is_set_up(db, settings):
    identity = provision.register(db, settings, "n-4")
    assert provision.node_ca(settings) is None
    assert "tls" not in provision.node_config(identity, "broker.city", 1883)["mqtt"]
    assert provision.node_mqtt_port(settings, 1883) == 1883
    certs.init(settings.data_dir / "tls", ["broker.city"])
    ca = provision.node_ca(settings)
    assert ca == (settings.data_dir / "tls" / "ca.pem").read_bytes()
    assert b"PRIVATE KEY" not in ca
    cfg = provision.node_config(identity, "broker.city", 8883, tls=True)
    assert cfg["mqtt"]["tls"] == {"ca": provision.NODE_CA_FILE}
    assert cfg["ota"]["ca"] == provision.NODE_CA_FILE
    assert provision.node_tls_files(ca) == {provision.NODE_CA_FILE: ca}
    assert provision.node_mqtt_port(settings, 1883) == 8883  # plain 1883 is loopback-only now
    assert provision.node_mqtt_port(settings, 9000) == 9000


def test_bad_registrations_say_why(db, settings):
    provision.register(db, settings, "n-1", mac="24:6F:28:AA:BB:CC")
    for kwargs, words in (
        ({"node_id": "n-1"}, "already registered"),
        ({"node_id": "Bad_Id"}, "a-z, 0-9"),
        ({"node_id": "polylink-ingest"}, "reserved"),
        ({"node_id": "n-2", "board": "NOPE"}, "unknown board"),
        ({"node_id": "n-3", "mac": "24:6f"}, "6 bytes"),
        ({"node_id": "n-4", "mac": "246f28aabbcc"}, "another node"),
    ):
        with pytest.raises(provision.ProvisionError, match=words):
            provision.register(db, settings, **kwargs)
    assert {r["node_id"] for r in db.query("SELECT node_id FROM node_credentials")} == {"n-1"}


def test_revoked_node_can_be_registered_again_with_new_secrets(db, settings):
    first = provision.register(db, settings, "n-1")
    provision.revoke(db, settings, "n-1")
    assert "n-1" not in identity_store.active_mqtt_hashes(db)
    with pytest.raises(provision.ProvisionError, match="no active credentials"):
        provision.revoke(db, settings, "n-1")
    second = provision.register(db, settings, "n-1")
    assert second["mqtt"]["password"] != first["mqtt"]["password"]
    assert brokerauth.verify_password(second["mqtt"]["password"],
                                      identity_store.active_mqtt_hashes(db)["n-1"])


def test_cli_node_add_prints_secrets_once_and_revoke(runner, db):
    r = runner.invoke(cli, ["node", "add", "lamp-42", "--board", "LILYGO_T3_S3", "--json"])
    assert r.exit_code == 0, r.output
    identity = json.loads(r.output)
    assert identity["node_id"] == "lamp-42" and identity["lorawan"]["dev_eui"]
    r = runner.invoke(cli, ["node", "add", "lamp-42"])
    assert r.exit_code == 1 and "Error: node 'lamp-42' is already registered" in r.output
    r = runner.invoke(cli, ["node", "add", "--board", "ESP32_GENERIC"])
    assert r.exit_code == 0 and "mqtt password" in r.output and "shown only once" in r.output
    r = runner.invoke(cli, ["node", "revoke", "lamp-42"])
    assert r.exit_code == 0 and "revoked" in r.output
    r = runner.invoke(cli, ["node", "revoke", "lamp-42"])
    assert r.exit_code == 1 and "no active credentials" in r.output


def test_api_registers_revokes_rotates(client, token, db):
    h = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/nodes", json={"id": "api-1", "board": "HELTEC_WIFI_LORA_32_V2"},
                    headers=h)
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    assert r.json["mqtt"]["user"] == "api-1" and r.json["lorawan"]["app_key"]
    ident = client.get("/api/v1/nodes/api-1/identity", headers=h).json
    assert ident["dev_eui"] == r.json["lorawan"]["dev_eui"] and "app_key" not in ident
    assert r.json["mqtt"]["password"] not in json.dumps(ident)
    assert client.post("/api/v1/nodes", json={"id": "api-1"}, headers=h).status_code == 409
    bad = client.post("/api/v1/nodes", json={"id": "x", "colour": "red"}, headers=h)
    assert bad.status_code == 400 and "colour" in bad.json["error"]
    assert client.post("/api/v1/nodes", data="[1]", content_type="application/json",
                       headers=h).status_code == 400
    assert client.post("/api/v1/nodes", json={"board": 5}, headers=h).status_code == 400
    assert client.post("/api/v1/nodes", json={}).status_code == 401
    rot = client.post("/api/v1/nodes/api-1/rotate", headers=h)
    assert rot.status_code == 200 and rot.json["mqtt"]["password"] != r.json["mqtt"]["password"]
    assert client.post("/api/v1/nodes/api-1/revoke", headers=h).json == {"node_id": "api-1",
                                                                         "revoked": True}
    assert client.post("/api/v1/nodes/api-1/revoke", headers=h).status_code == 409
    assert client.post("/api/v1/nodes/nope/revoke", headers=h).status_code == 404
    # A random id when none is given.
    assert re.fullmatch(r"node-[a-z2-9]{8}",
                        client.post("/api/v1/nodes", headers=h).json["node_id"])


def test_ui_registers_with_csrf_and_shows_secrets_once(logged_in, form_token, db):
    c = logged_in
    page = c.get("/provision/").get_data(as_text=True)
    assert "HELTEC_V3" in page and "No node registered yet" in page
    assert 'href="/provision/"' in c.get("/nodes/").get_data(as_text=True)  # nav link
    csrf = form_token(c, "/provision/")
    assert c.post("/provision/", data={"id": "ui-1"}).status_code == 400  # no CSRF token
    r = c.post("/provision/", data={"id": "ui-1", "board": "HELTEC_V3", "csrf_token": csrf})
    html = r.get_data(as_text=True)
    password = re.search(r"MQTT password</th><td><code>([^<]+)<", html).group(1)
    assert r.headers["Cache-Control"] == "no-store" and "AppKey" in html
    assert brokerauth.verify_password(password, identity_store.active_mqtt_hashes(db)["ui-1"])
    again = c.get("/provision/").get_data(as_text=True)
    assert "ui-1" in again and password not in again
    bad = c.post("/provision/", data={"id": "ui-1", "csrf_token": csrf}).get_data(as_text=True)
    assert "Not registered: node &#39;ui-1&#39; is already registered" in bad
    c.post("/provision/ui-1/revoke", data={"csrf_token": csrf})
    assert "ui-1" not in identity_store.active_mqtt_hashes(db)


def test_viewers_cannot_register_or_revoke(client, db, form_token):
    from fleet.web.auth import create_token, create_user

    viewer = create_token(db, "viewer-script", "viewer")
    h = {"Authorization": f"Bearer {viewer}"}
    r = client.post("/api/v1/nodes", json={"id": "v-1"}, headers=h)
    assert r.status_code == 403 and identity_store.get_credentials(db, "v-1") is None
    create_user(db, "val", "long enough pw", "viewer")
    client.post("/auth/login", data={"username": "val", "password": "long enough pw",
                                     "csrf_token": form_token(client, "/auth/login")})
    assert client.get("/provision/").status_code == 403
    assert 'href="/provision/"' not in client.get("/nodes/").get_data(as_text=True)


def test_ui_claim_tokens_and_approval(logged_in, form_token, db, settings):
    from fleet.identity import claims

    c = logged_in
    csrf = form_token(c, "/provision/")
    r = c.post("/provision/claim-tokens", data={"board": "ESP32_GENERIC", "uses": "5",
                                                "hours": "2", "csrf_token": csrf})
    html = r.get_data(as_text=True)
    token = re.search(r"Claim token \(shown only once\):</strong> <code>([^<]+)<", html).group(1)
    assert r.headers["Cache-Control"] == "no-store"
    tid = token.split(".")[0]
    assert f"{tid}:$7$" in (settings.broker_dir / "claim_passwd").read_text()
    assert token not in c.get("/provision/").get_data(as_text=True)
    answer = claims.request(db, settings, tid, "c-1", json.dumps({"mac": "aabbccddeeff"}).encode())
    assert answer == {"state": "pending"}
    claim_id = identity_store.get_claim(db, "aabbccddeeff")["id"]
    assert c.post(f"/provision/claims/{claim_id}/approve").status_code == 400  # no CSRF token
    r = c.post(f"/provision/claims/{claim_id}/approve", data={"csrf_token": csrf})
    assert (r.status_code == 302
            and identity_store.get_claim(db, "aabbccddeeff")["state"] == "approved")
    issued = claims.request(db, settings, tid, "c-1", json.dumps({"mac": "aabbccddeeff"}).encode())
    assert issued["state"] == "issued" and issued["node"] == "pl-aabbccddeeff"
    bad = c.post("/provision/claim-tokens", data={"board": "NOPE", "csrf_token": csrf},
                 follow_redirects=True)
    assert "No claim token made: unknown board" in bad.get_data(as_text=True)


def _status_from(db, node):
    """The node reports in (a STATUS frame through the ingest path), so the fleet has heard it."""
    from polylink import proto

    from fleet.ingest import Ingest

    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.STATUS, 1, {"fw": "0.1.0", "uptime": 5})
    ing = Ingest(db)
    ing.add(f"pl/v1/{node}/up", bytes(buf[:n]), 1_700_000_000.0)
    assert ing.flush() == 1


def test_used_up_claim_token_stays_admitted_only_until_its_board_is_heard(db, settings):
    from fleet.identity import claims

    token = claims.create_token(db, settings, "ESP32_GENERIC", uses=1, auto_approve=True)
    tid = token.split(".")[0]
    first = claims.request(db, settings, tid, "c-1", json.dumps({"mac": "dd0000000001"}).encode())
    assert first["state"] == "issued"
    assert tid in identity_store.active_claim_token_hashes(db), \
        "its board may not have the answer yet"
    assert identity_store.next_claim_token_expiry(db) is not None
    # Asked again by the same board: a fresh password, the lost one stops working.
    again = claims.request(db, settings, tid, "c-1", json.dumps({"mac": "dd0000000001"}).encode())
    assert again["state"] == "issued" and again["node"] == first["node"]
    current = identity_store.active_mqtt_hashes(db)[first["node"]]
    assert brokerauth.verify_password(again["mqtt"]["password"], current)
    assert not brokerauth.verify_password(first["mqtt"]["password"], current)
    assert identity_store.get_claim_token(db, tid)["uses"] == 1, "sending it again takes no use"
    # Another claim id for the same MAC gets nothing: it waits for an operator (#19), who
    # rejects it; until then the listener admits the token for it to hear the decision.
    thief = claims.request(db, settings, tid, "c-2", json.dumps({"mac": "dd0000000001"}).encode())
    assert thief == {"state": "pending"}
    _status_from(db, first["node"])
    assert tid in identity_store.active_claim_token_hashes(db)
    claims.decide(db, identity_store.get_claim(db, "dd0000000001", "c-2")["id"], False, "tech")
    assert tid not in identity_store.active_claim_token_hashes(db)
    assert identity_store.next_claim_token_expiry(db) is None
    late = claims.request(db, settings, tid, "c-1", json.dumps({"mac": "dd0000000001"}).encode())
    assert late["state"] == "rejected" and "already claimed" in late["reason"]


def test_revoking_a_claimed_node_before_it_reports_closes_the_token_too(db, settings):
    from fleet.identity import claims

    token = claims.create_token(db, settings, "ESP32_GENERIC", uses=1, auto_approve=True)
    tid = token.split(".")[0]
    first = claims.request(db, settings, tid, "c-1", json.dumps({"mac": "dd0000000002"}).encode())
    provision.revoke(db, settings, first["node"], actor="tech")
    assert tid not in identity_store.active_claim_token_hashes(db)
    again = claims.request(db, settings, tid, "c-1", json.dumps({"mac": "dd0000000002"}).encode())
    assert again["state"] == "rejected"
    assert first["node"] not in identity_store.active_mqtt_hashes(db), "revoked stays revoked"
