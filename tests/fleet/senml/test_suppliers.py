"""Suppliers from the admin's page, the API and the CLI: the token is shown once and works until
revoked, each supplier writes only the nodes it is given, every change is audited and reaches
the broker's password file. Runs on SQLite and PostgreSQL (none of it stores SenML)."""

import json

import pytest

from fleet import cli
from fleet.store import audit as audit_store
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import suppliers as supplier_store
from fleet.web import auth

PASSWORD = "correct horse"
# A pack the intake accepts from a token and node but maps to no quantity: it proves the token
# and the node passed without storing anything.
UNMAPPED = json.dumps([{"n": "nothing-known", "v": 1}])


def _login(app, db, form_token, role):
    auth.create_user(db, f"{role}-user", PASSWORD, role)
    c = app.test_client()
    r = c.post("/auth/login", data={"username": f"{role}-user", "password": PASSWORD,
                                    "csrf_token": form_token(c, "/auth/login")})
    assert r.status_code == 302
    return c


def _post_senml(client, token, node):
    return client.post(f"/api/v1/ingest/senml?node={node}", data=UNMAPPED, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/senml+json"})


def _broker_logins(settings) -> str:
    return (settings.broker_dir / "passwd").read_text()


def _register(db, *nodes):
    for node in nodes:
        identity_store.register_node(db, node, {"mqtt_user": node, "mqtt_hash": "x"})


def test_admin_page_makes_a_token_once_gives_nodes_and_revokes(app, db, settings, form_token):
    _register(db, "wx-1", "wx-2")
    admin = _login(app, db, form_token, "admin")
    page = admin.get("/suppliers/")
    assert page.status_code == 200 and "No suppliers yet." in page.get_data(as_text=True)
    csrf = form_token(admin, "/suppliers/")
    r = admin.post("/suppliers/", data={"name": "acme", "csrf_token": csrf})
    text = r.get_data(as_text=True)
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    token = text.split('id="token" value="')[1].split('"')[0]
    assert token.startswith("pls_") and "not shown again" in text
    with admin.session_transaction() as session:  # a flash message would sit here
        assert token not in json.dumps(dict(session), default=str)
    # Never again: not on the page, not in the session cookie, not in the audit log.
    again = admin.get("/suppliers/").get_data(as_text=True)
    assert token not in again and "acme" in again
    assert token not in json.dumps(audit_store.audit_log(db))
    assert "supplier.acme:" in _broker_logins(settings)
    # A bad or taken name says why.
    r = admin.post("/suppliers/", data={"name": "Acme Corp", "csrf_token": csrf})
    assert r.status_code == 400 and "must be 1-32 of a-z 0-9 -" in r.get_data(as_text=True)
    r = admin.post("/suppliers/", data={"name": "acme", "csrf_token": csrf})
    assert r.status_code == 400 and "is taken" in r.get_data(as_text=True)

    assert _post_senml(admin, token, "wx-1").status_code == 403  # not its node yet
    r = admin.post("/suppliers/nodes", data={"node_id": "wx-1", "supplier": "acme",
                                             "csrf_token": csrf})
    assert r.status_code == 303
    assert "wx-1" in admin.get("/suppliers/").get_data(as_text=True)
    r = _post_senml(admin, token, "wx-1")
    assert r.status_code == 400 and "maps to a registry quantity" in r.get_json()["error"]
    assert _post_senml(admin, token, "wx-2").status_code == 403
    r = admin.post("/suppliers/nodes", data={"node_id": "nope", "supplier": "acme",
                                             "csrf_token": csrf}, follow_redirects=True)
    assert "Not changed: unknown node" in r.get_data(as_text=True)

    r = admin.post("/suppliers/acme/revoke", data={"csrf_token": csrf}, follow_redirects=True)
    assert "Supplier acme revoked" in r.get_data(as_text=True)
    assert _post_senml(admin, token, "wx-1").status_code == 401
    assert "supplier.acme:" not in _broker_logins(settings)
    assert supplier_store.list_suppliers(db) == []
    assert node_store.get_node(db, "wx-1")["id"] == "wx-1"  # the node and its data stay
    log = [(e["action"], e["actor"]) for e in audit_store.audit_log(db, target="acme")]
    assert log == [("supplier.revoke", "admin-user"), ("supplier.add", "admin-user")]


@pytest.mark.parametrize("role", ["viewer", "technician", "operator"])
def test_suppliers_are_for_admins_only(app, db, form_token, role):
    c = _login(app, db, form_token, role)
    assert c.get("/suppliers/").status_code == 403
    assert "/suppliers/" not in c.get("/nodes/").get_data(as_text=True)
    csrf = form_token(c, "/nodes/")
    assert c.post("/suppliers/", data={"name": "x", "csrf_token": csrf}).status_code == 403
    headers = {"Authorization": "Bearer " + auth.create_token(db, f"t-{role}", role)}
    assert c.get("/api/v1/suppliers", headers=headers).status_code == 403
    assert c.post("/api/v1/suppliers", json={"name": "x"}, headers=headers).status_code == 403
    assert supplier_store.list_suppliers(db) == []


def test_api_creates_lists_assigns_and_revokes(client, db, settings):
    _register(db, "wx-1")
    h = {"Authorization": "Bearer " + auth.create_token(db, "root", "admin")}
    r = client.post("/api/v1/suppliers", json={"name": "acme"}, headers=h)
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    token = r.get_json()["token"]
    assert client.post("/api/v1/suppliers", json={"name": "acme"}, headers=h).status_code == 409
    r = client.post("/api/v1/suppliers", json={"name": "-x"}, headers=h)
    assert r.status_code == 400 and "a-z 0-9" in r.get_json()["error"]
    r = client.put("/api/v1/nodes/wx-1/supplier", json={"supplier": "acme"}, headers=h)
    assert r.get_json() == {"node_id": "wx-1", "supplier": "acme"}
    (listed,) = client.get("/api/v1/suppliers", headers=h).get_json()
    assert listed["name"] == "acme" and listed["nodes"] == ["wx-1"]
    assert token not in json.dumps(listed)
    assert client.put("/api/v1/nodes/nope/supplier", json={"supplier": "acme"},
                      headers=h).status_code == 404
    r = client.put("/api/v1/nodes/wx-1/supplier", json={"supplier": "ghost"}, headers=h)
    assert r.status_code == 400 and "no supplier named 'ghost'" in r.get_json()["error"]
    assert client.put("/api/v1/nodes/wx-1/supplier", json={}, headers=h).status_code == 400
    r = client.put("/api/v1/nodes/wx-1/supplier", json={"supplier": None}, headers=h)
    assert r.status_code == 200 and _post_senml(client, token, "wx-1").status_code == 403
    assert client.delete("/api/v1/suppliers/acme", headers=h).status_code == 204
    assert _post_senml(client, token, "wx-1").status_code == 401
    assert client.delete("/api/v1/suppliers/acme", headers=h).status_code == 404


def test_cli_lists_releases_and_revokes(runner, db, settings):
    _register(db, "wx-1")
    r = runner.invoke(cli.cli, ["supplier", "add", "acme"])
    assert r.exit_code == 0 and r.output.startswith("pls_")
    assert runner.invoke(cli.cli, ["supplier", "assign", "wx-1", "acme"]).exit_code == 0
    r = runner.invoke(cli.cli, ["supplier", "list"])
    assert r.output.split() == ["acme", "wx-1"] and "pls_" not in r.output
    assert runner.invoke(cli.cli, ["supplier", "release", "wx-1"]).exit_code == 0
    assert runner.invoke(cli.cli, ["supplier", "list"]).output.split() == ["acme", "(no", "nodes)"]
    r = runner.invoke(cli.cli, ["supplier", "revoke", "acme"])
    assert r.exit_code == 0 and "supplier acme revoked; 0 node(s) released" in r.output
    r = runner.invoke(cli.cli, ["supplier", "revoke", "acme"])
    assert r.exit_code == 1 and "no supplier named 'acme'" in r.output
    assert [e["action"] for e in audit_store.audit_log(db, target="acme")][0] == "supplier.revoke"
