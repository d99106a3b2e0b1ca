"""Providers configured through the API, the UI and the CLI; the password is never shown back."""

import re

from fleet.cli import cli
from fleet.providers import registry
from fleet.store import identity as identity_store
from fleet.store import providers as provider_store
from fleet.web.auth import create_token

BODY = {"kind": "tts", "host": "eu1.cloud.thethings.network", "tls": True,
        "application": "city-sensors", "username": "city-sensors@ttn", "password": "NNSXS.SECRET"}


def test_api_put_list_delete_and_secret_write_only(client, auth_headers, db, settings):
    r = client.put("/api/v1/providers/ttn", json=BODY, headers=auth_headers)
    assert r.status_code == 403  # an operator's token: providers are the admin's
    auth_headers = {"Authorization": "Bearer " + create_token(db, "admin-t", role="admin")}
    r = client.put("/api/v1/providers/ttn", json=BODY, headers=auth_headers)
    assert r.status_code == 200, r.json
    assert r.json["port"] == 8883 and r.json["tenant"] == "ttn" and r.json["password_set"]
    listed = client.get("/api/v1/providers", headers=auth_headers)
    assert "NNSXS.SECRET" not in listed.get_data(as_text=True)
    assert [p["name"] for p in listed.json] == ["ttn"]
    assert registry.login(db, settings.data_dir, "ttn")[1] == "NNSXS.SECRET"
    # editing without a password keeps the stored one
    r = client.put("/api/v1/providers/ttn", json=dict(BODY, password=None, downlinks_per_day=5),
                   headers=auth_headers)
    assert r.json["downlinks_per_day"] == 5
    assert registry.login(db, settings.data_dir, "ttn")[1] == "NNSXS.SECRET"
    assert (settings.data_dir / registry.KEY_FILE).stat().st_mode & 0o077 == 0
    bad = client.put("/api/v1/providers/ttn", json=dict(BODY, kind="helium"), headers=auth_headers)
    assert bad.status_code == 400 and "kind" in bad.json["error"]
    bad = client.put("/api/v1/providers/Bad_Name", json=BODY, headers=auth_headers)
    assert bad.status_code == 400 and "name" in bad.json["error"]
    bad = client.put("/api/v1/providers/x", json=dict(BODY, color="red"), headers=auth_headers)
    assert bad.status_code == 400 and "color" in bad.json["error"]
    assert client.get("/api/v1/providers").status_code == 401
    assert client.delete("/api/v1/providers/ttn", headers=auth_headers).status_code == 204
    assert client.delete("/api/v1/providers/ttn", headers=auth_headers).status_code == 404


def test_ui_form_saves_provider_and_never_shows_password(client, user, form_token, db):
    r = client.post("/auth/login", data={"username": user[0], "password": user[1],
                                         "csrf_token": form_token(client, "/auth/login")})
    assert r.status_code == 302
    page = client.get("/providers/").get_data(as_text=True)
    assert "LoRaWAN providers" in page
    data = {"name": "cs", "kind": "chirpstack", "host": "chirpstack.city.local", "port": "1883",
            "application": "7b0cbe3c", "password": "hunter2-pw", "tenant": "", "username": "fleet",
            "downlinks_per_day": "", "csrf_token": form_token(client, "/providers/")}
    r = client.post("/providers/", data=data, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Provider cs saved" in page and "chirpstack.city.local:1883" in page
    assert "hunter2-pw" not in page
    r = client.post("/providers/", data=dict(data, host=""), follow_redirects=True)
    assert "Not saved: host" in r.get_data(as_text=True)
    # without the CSRF token the form is refused
    r = client.post("/providers/", data={k: v for k, v in data.items() if k != "csrf_token"})
    assert r.status_code == 400
    assert [p["name"] for p in registry.list_all(db)] == ["cs"]


def test_cli_add_list_link(runner, db):
    r = runner.invoke(cli, ["provider", "add", "ttn", "--kind", "tts", "--host", "localhost",
                            "--application", "city", "--password-stdin"], input="k3y\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["provider", "list"])
    assert "ttn" in r.output and "password=set" in r.output and "k3y" not in r.output
    identity_store.register_node(db, "lamp-1", {"mqtt_user": "lamp-1", "mqtt_hash": "x"})
    r = runner.invoke(cli, ["provider", "link", "lamp-1", "ttn", "02a1b2c3d4e5f601"])
    assert r.exit_code == 0, r.output
    assert provider_store.identities(db, "lamp-1")[0]["ext_id"] == "02A1B2C3D4E5F601"
    r = runner.invoke(cli, ["provider", "link", "lamp-1", "ttn", "nothex"])
    assert r.exit_code == 1 and "16 hex digits" in r.output
    r = runner.invoke(cli, ["provider", "add", "x", "--kind", "tts", "--host", "h",
                            "--application", "a/b", "--no-password"])
    assert r.exit_code == 1 and re.search("application", r.output) and "Traceback" not in r.output
