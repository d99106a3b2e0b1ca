"""Suppliers and claim tokens per organisation (issue 18): an organisation's admin registers its
own suppliers, sees only those (the platform sees all), and what a supplier pushes lands in its
organisation's nodes; a supplier's token can be rotated, the old one refused at once with a
clear error; a node claimed with an organisation's claim token is that organisation's, and
another organisation neither lists, revokes nor decides its tokens and claims. Both stores."""

import json
import time

import pytest
from twoorgs import parking_and_environment

from fleet.cli import cli
from fleet.identity import claims
from fleet.senml import intake
from fleet.store import audit as audit_store
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store import profiles as profile_store
from fleet.store import suppliers as supplier_store
from fleet.store import telemetry as telemetry_store
from fleet.store.scope import EVERYTHING, Scope, set_scope
from fleet.web import auth

CO2 = json.dumps([{"bt": 1.7e9, "n": "co2", "v": 612}])


def _admin(db, org_id, name):
    set_scope(db, Scope(org_id))
    token = auth.create_token(db, name, "admin")
    set_scope(db, EVERYTHING)
    return {"Authorization": f"Bearer {token}"}


def _senml(client, token, node, body=CO2):
    return client.post(f"/api/v1/ingest/senml?node={node}", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/senml+json"})


@pytest.fixture
def two(db):
    """parking and environment, each with a node; their admins' API headers; the platform's."""
    park, env = parking_and_environment(db)
    return {"park": park, "env": env, "park_h": _admin(db, park, "park-admin"),
            "env_h": _admin(db, env, "env-admin"), "city_h": _admin(db, 1, "city-admin")}


def test_an_organisation_s_supplier_is_its_own_and_writes_only_its_nodes(client, db, settings,
                                                                         two):
    park_h, env_h, city_h = two["park_h"], two["env_h"], two["city_h"]
    r = client.post("/api/v1/suppliers", json={"name": "acme"}, headers=park_h)
    assert r.status_code == 201, r.get_json()
    acme = r.get_json()["token"]
    r = client.post("/api/v1/suppliers", json={"name": "wxco"}, headers=env_h)
    wxco = r.get_json()["token"]
    # Each sees its own; the platform sees both, each with its organisation.
    assert [s["name"] for s in client.get("/api/v1/suppliers", headers=park_h).json] == ["acme"]
    assert [s["name"] for s in client.get("/api/v1/suppliers", headers=env_h).json] == ["wxco"]
    assert {s["name"]: s["org_id"] for s in client.get("/api/v1/suppliers",
                                                        headers=city_h).json} == {
        "acme": two["park"], "wxco": two["env"]}
    # A name is a broker login: taken across organisations, and that is all that is said.
    r = client.post("/api/v1/suppliers", json={"name": "acme"}, headers=env_h)
    assert r.status_code == 409 and "is taken" in r.json["error"]

    # Giving nodes: only the organisation's own supplier to its own node.
    put = "/api/v1/nodes/{}/supplier"
    assert client.put(put.format("park-1"), json={"supplier": "acme"},
                      headers=park_h).status_code == 200
    r = client.put(put.format("env-1"), json={"supplier": "acme"}, headers=park_h)
    assert r.status_code == 404  # environment's node: not found for parking
    r = client.put(put.format("env-1"), json={"supplier": "acme"}, headers=env_h)
    assert r.status_code == 400 and r.json["error"] == "no supplier named 'acme'"
    # Not even the platform gives a supplier another organisation's node.
    r = client.put(put.format("env-1"), json={"supplier": "acme"}, headers=city_h)
    assert r.status_code == 400 and "belongs to another organisation" in r.json["error"]
    client.put(put.format("env-1"), json={"supplier": "wxco"}, headers=env_h)

    # What a supplier pushes lands in its organisation's node, never the other's.
    assert _senml(client, acme, "park-1").json["stored"] == 1
    assert _senml(client, acme, "env-1").status_code == 403
    assert _senml(client, wxco, "park-1").status_code == 403
    assert telemetry_store.count_readings(db, "park-1") == 1
    assert telemetry_store.count_readings(db, "env-1") == 0
    assert node_store.get_node(db, "park-1")["last_seen"] is not None
    broker = (settings.broker_dir / "acl").read_text()
    assert "user supplier.acme\ntopic write pl/v1/park-1/senml\n" in broker
    assert "pl/v1/env-1/senml" not in broker.split("user supplier.acme")[1].split("user")[0]

    # environment neither rotates nor revokes parking's supplier: as if it did not exist.
    for method, path in (("post", "/api/v1/suppliers/acme/rotate"),
                         ("delete", "/api/v1/suppliers/acme")):
        r = getattr(client, method)(path, headers=env_h)
        g = getattr(client, method)(path.replace("acme", "ghost"), headers=env_h)
        assert (r.status_code, r.json["error"].replace("acme", "X")) == (
            g.status_code, g.json["error"].replace("ghost", "X")) and r.status_code == 404
    assert _senml(client, acme, "park-1", CO2.replace("612", "613")).status_code == 200

    # A node moved to another organisation leaves its supplier behind.
    orgs.move_node(db, "park-1", "environment")
    assert _senml(client, acme, "park-1").status_code == 403
    assert "pl/v1/park-1/senml" not in "".join(
        n for _h, nodes in profile_store.supplier_logins(db).values() for n in nodes)


def test_rotation_refuses_the_old_token_clearly_and_the_new_one_works(client, db, settings,
                                                                      two, runner):
    park_h = two["park_h"]
    old = client.post("/api/v1/suppliers", json={"name": "acme"}, headers=park_h).json["token"]
    client.put("/api/v1/nodes/park-1/supplier", json={"supplier": "acme"}, headers=park_h)
    passwd = (settings.broker_dir / "passwd").read_text()
    r = client.post("/api/v1/suppliers/acme/rotate", headers=park_h)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    new = r.json["token"]
    assert new.startswith("pls_") and new != old
    r = _senml(client, old, "park-1")
    assert r.status_code == 401
    assert "this token of supplier acme was replaced on" in r.json["error"]
    assert "rotated" in r.json["error"]
    assert _senml(client, new, "park-1").json["stored"] == 1
    # The broker's password for supplier.acme changed with it.
    line = [x for x in (settings.broker_dir / "passwd").read_text().splitlines()
            if x.startswith("supplier.acme:")]
    assert line and line[0] not in passwd
    # Audited in parking's log; neither token is in it.
    set_scope(db, Scope(two["park"]))
    log = audit_store.audit_log(db)
    assert [e["actor"] for e in log if e["action"] == "supplier.rotate"] == ["token:park-admin"]
    assert old not in json.dumps(log) and new not in json.dumps(log)
    set_scope(db, EVERYTHING)
    assert [s["rotated"] is not None for s in supplier_store.list_suppliers(db)] == [True]

    # The CLI, as parking: a new token once; the one before is the "rotated" one now, the
    # first is simply unknown.
    r = runner.invoke(cli, ["--org", "parking", "supplier", "rotate", "acme"])
    assert r.exit_code == 0, r.output
    third = r.output.strip()
    assert _senml(client, third, "park-1").json["duplicates"] == 1  # stored once already
    assert "rotated" in _senml(client, new, "park-1").json["error"]
    assert _senml(client, old, "park-1").json["error"].startswith("a supplier token is required")
    r = runner.invoke(cli, ["--org", "environment", "supplier", "rotate", "acme"])
    assert r.exit_code == 1 and "no supplier named 'acme'" in r.output
    r = runner.invoke(cli, ["--org", "environment", "supplier", "list"])
    assert r.exit_code == 0 and "acme" not in r.output
    r = runner.invoke(cli, ["supplier", "list"])  # the platform's: whose each one is
    assert r.exit_code == 0 and r.output.split() == ["acme", "park-1", "(of", "parking)"]


def test_rotating_from_the_page_shows_the_new_token_once(app, db, form_token, two):
    set_scope(db, Scope(two["park"]))
    auth.create_user(db, "park-user", "correct horse", "admin")
    old = intake.add_supplier(db, "acme")
    set_scope(db, EVERYTHING)
    c = app.test_client()
    c.post("/auth/login", data={"username": "park-user", "password": "correct horse",
                                "csrf_token": form_token(c, "/auth/login")})
    r = c.post("/suppliers/acme/rotate", data={"csrf_token": form_token(c, "/suppliers/")})
    text = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    new = text.split('id="token" value="')[1].split('"')[0]
    assert new.startswith("pls_") and new != old and "old token no" in text
    assert new not in c.get("/suppliers/").get_data(as_text=True)
    assert intake.supplier(db, new) == "acme" and intake.supplier(db, old) is None
    r = c.post("/suppliers/ghost/rotate", data={"csrf_token": form_token(c, "/suppliers/")})
    assert r.status_code == 404


def _token_of(db, settings, org_id, **kw):
    set_scope(db, Scope(org_id))
    try:
        return claims.create_token(db, settings, "ESP32_GENERIC", actor="t", **kw)
    finally:
        set_scope(db, EVERYTHING)


def test_a_board_claimed_with_an_organisation_s_token_is_its_node(client, db, settings, two,
                                                                  runner):
    park_token = _token_of(db, settings, two["park"], uses=2, auto_approve=True)
    env_token = _token_of(db, settings, two["env"])
    park_id, env_id = park_token.split(".")[0], env_token.split(".")[0]
    # Claimed with parking's token (auto-approved): parking's node, in parking's audit log.
    answer = claims.request(db, settings, park_id, "board-a",
                            json.dumps({"mac": "02:00:00:00:0a:01"}).encode())
    assert answer["state"] == "issued", answer
    node = answer["node"]
    assert orgs.org_of_node(db, node) == two["park"]
    set_scope(db, Scope(two["park"]))
    assert {e["action"] for e in audit_store.audit_log(db, target=node)} >= {"node.register"}
    set_scope(db, EVERYTHING)
    # Claimed with environment's token: waits for environment, which alone sees and decides it.
    assert claims.request(db, settings, env_id, "board-b",
                          json.dumps({"mac": "02:00:00:00:0b:01"}).encode()) == {
        "state": "pending"}
    env_claim = identity_store.get_claim(db, "020000000b01", "board-b")
    park_claims = client.get("/api/v1/claims?state=all", headers=two["park_h"]).json["claims"]
    assert [c["token_id"] for c in park_claims] == [park_id]
    r = client.post(f"/api/v1/claims/{env_claim['id']}/approve", headers=two["park_h"])
    assert r.status_code == 404
    r = client.post(f"/api/v1/claims/{env_claim['id']}/approve", headers=two["env_h"])
    assert r.status_code == 200
    answer = claims.request(db, settings, env_id, "board-b",
                            json.dumps({"mac": "02:00:00:00:0b:01"}).encode())
    assert answer["state"] == "issued"
    assert orgs.org_of_node(db, answer["node"]) == two["env"]

    # Tokens: each lists its own; another's token is as unknown as one that never existed.
    for org, mine in (("parking", park_id), ("environment", env_id)):
        r = runner.invoke(cli, ["--org", org, "claim", "tokens"])
        assert r.exit_code == 0 and mine in r.output and {park_id, env_id} - {mine} not in (
            set(r.output.split()))
    r = runner.invoke(cli, ["--org", "environment", "claim", "revoke", park_id])
    g = runner.invoke(cli, ["--org", "environment", "claim", "revoke", "ct00000000"])
    assert r.exit_code == g.exit_code == 1
    assert r.output.replace(park_id, "X") == g.output.replace("ct00000000", "X")
    assert identity_store.get_claim_token(db, park_id)["revoked_at"] is None
    r = runner.invoke(cli, ["--org", "parking", "claim", "revoke", park_id])
    assert r.exit_code == 0, r.output
    assert park_id not in identity_store.active_claim_token_hashes(db)
    answer = claims.request(db, settings, park_id, "board-c",
                            json.dumps({"mac": "02:00:00:00:0a:02"}).encode())
    assert answer["state"] == "rejected"


def test_a_conflict_across_organisations_is_the_platform_s_to_decide(client, db, settings, two):
    park_id = _token_of(db, settings, two["park"]).split(".")[0]
    env_id = _token_of(db, settings, two["env"]).split(".")[0]
    mac = json.dumps({"mac": "02:00:00:00:0c:01"}).encode()
    claims.request(db, settings, env_id, "squatter", mac)
    claims.request(db, settings, park_id, "real-board", mac)
    real = identity_store.get_claim(db, "020000000c01", "real-board")
    assert real["conflict"]
    # parking may not reject environment's claim by approving its own: the platform decides.
    r = client.post(f"/api/v1/claims/{real['id']}/approve", headers=two["park_h"])
    assert r.status_code == 409 and "the platform operator decides" in r.json["error"]
    r = client.post(f"/api/v1/claims/{real['id']}/approve", headers=two["city_h"])
    assert r.status_code == 200
    squat = identity_store.get_claim(db, "020000000c01", "squatter")
    assert squat["state"] == "rejected"
    assert claims.request(db, settings, park_id, "real-board", mac)["state"] == "issued"
    assert orgs.org_of_node(db, "pl-020000000c01") == two["park"]


def test_existing_suppliers_and_claim_tokens_are_the_platform_s(db):
    intake.add_supplier(db, "old")
    identity_store.add_claim_token(db, "ct1", "h", "ESP32_GENERIC", 1, time.time() + 60, False,
                                   "cli")
    assert db.conn.execute("SELECT org_id FROM suppliers").fetchone()[0] == 1
    assert db.conn.execute("SELECT org_id FROM claim_tokens").fetchone()[0] == 1


def test_pages_show_only_the_organisation_s_suppliers_and_claim_tokens(app, db, settings,
                                                                       form_token, two):
    # The route walk compares statuses (tests/fleet/organisations/test_isolation.py reads no
    # body: the test client calls every answer streamed), so the pages are read here.
    set_scope(db, Scope(two["park"]))
    intake.add_supplier(db, "acme")
    park_token = claims.create_token(db, settings, "ESP32_GENERIC").split(".")[0]
    identity_store.add_claim(db, park_token, "board-p", "020000000d01", "ESP32_GENERIC")
    identity_store.register_node(db, "park-cred", {"mqtt_user": "park-cred", "mqtt_hash": "x"})
    set_scope(db, Scope(two["env"]))
    auth.create_user(db, "env-user", "correct horse", "admin")
    intake.add_supplier(db, "wxco")
    env_token = claims.create_token(db, settings, "ESP32_GENERIC").split(".")[0]
    set_scope(db, EVERYTHING)
    c = app.test_client()
    c.post("/auth/login", data={"username": "env-user", "password": "correct horse",
                                "csrf_token": form_token(c, "/auth/login")})
    page = c.get("/suppliers/").get_data(as_text=True)
    assert "wxco" in page and "acme" not in page and "<small>environment" not in page
    page = c.get("/provision/").get_data(as_text=True)
    assert env_token in page and park_token not in page and "020000000d01" not in page
    assert "park-cred" not in page  # the registered nodes' list is the organisation's too
    r = c.post(f"/provision/claim-tokens/{park_token}/revoke",
               data={"csrf_token": form_token(c, "/provision/")})
    assert r.status_code == 404
    assert identity_store.get_claim_token(db, park_token)["revoked_at"] is None
    r = c.post(f"/provision/claim-tokens/{env_token}/revoke",
               data={"csrf_token": form_token(c, "/provision/")})
    assert r.status_code == 302
    assert identity_store.get_claim_token(db, env_token)["revoked_at"] is not None


def test_the_platform_acting_on_an_organisation_s_supplier_is_audited_in_both(client, db, two):
    park_h, city_h = two["park_h"], two["city_h"]
    client.post("/api/v1/suppliers", json={"name": "acme"}, headers=park_h)
    assert client.post("/api/v1/suppliers/acme/rotate", headers=city_h).status_code == 200
    assert client.put("/api/v1/nodes/park-1/supplier", json={"supplier": "acme"},
                      headers=city_h).status_code == 200
    assert client.delete("/api/v1/suppliers/acme", headers=city_h).status_code == 204
    for org in (two["park"], 1):
        set_scope(db, Scope(org, platform=org == 1))
        got = [(e["action"], e["org_id"]) for e in audit_store.audit_log(db)
               if e["actor"] == "token:city-admin" and e["org_id"] == org]  # platform: all
        assert got == [(a, org) for a in ("supplier.revoke", "node.supplier", "supplier.rotate")]
    set_scope(db, EVERYTHING)
