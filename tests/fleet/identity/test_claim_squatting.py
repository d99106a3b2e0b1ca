"""Claim squatting (#19): a token holder who claims a victim board's MAC first must not lock the
real board out; a second claim for a claimed (or pending) MAC waits for an operator, side by side
with the first, and only the one the operator approves gets credentials."""

import json

from fleet.broker import auth as brokerauth
from fleet.cli import cli
from fleet.identity import claims
from fleet.store import audit as audit_store
from fleet.store import identity as identity_store
from fleet.web.auth import create_token

MAC = "dd0000000001"


def _ask(db, settings, token, client_id, mac=MAC):
    return claims.request(db, settings, token.split(".")[0], client_id,
                          json.dumps({"mac": mac}).encode())


def _headers(db):
    return {"Authorization": "Bearer " + create_token(db, "tech", role="technician")}


def test_a_squatter_with_an_auto_approve_token_does_not_lock_the_real_board_out(client, db,
                                                                               settings):
    token = claims.create_token(db, settings, "ESP32_GENERIC", uses=5, hours=1,
                                auto_approve=True, actor="tech")
    squat = _ask(db, settings, token, "c-squatter")
    assert squat["state"] == "issued"  # first come: the token approves it
    # The real board asks with its own claim id: not refused for good, it waits for an operator,
    # and the token's auto-approve does not decide a conflict.
    real = _ask(db, settings, token, "c-real")
    assert real == {"state": "pending"}
    tech = _headers(db)
    r = client.get("/api/v1/claims?state=all", headers=tech)
    both = {c["client_id"]: c for c in r.json["claims"] if c["mac"] == MAC}
    assert set(both) == {"c-squatter", "c-real"}
    assert both["c-real"]["conflict"] and both["c-real"]["rivals"] == [both["c-squatter"]["id"]]
    # The operator approves the real board: the squatter's identity stops working.
    r = client.post(f"/api/v1/claims/{both['c-real']['id']}/approve", headers=tech)
    assert r.status_code == 200 and r.json["state"] == "approved"
    node = f"pl-{MAC}"
    assert identity_store.get_credentials(db, node)["revoked_at"] is not None
    issued = _ask(db, settings, token, "c-real")
    assert issued["state"] == "issued" and issued["node"] == node
    assert brokerauth.verify_password(issued["mqtt"]["password"],
                                      identity_store.active_mqtt_hashes(db)[node])
    assert not brokerauth.verify_password(squat["mqtt"]["password"],
                                          identity_store.active_mqtt_hashes(db)[node])
    assert _ask(db, settings, token, "c-squatter")["state"] == "rejected"
    actions = [(e["action"], e["target"]) for e in audit_store.audit_log(db)]
    assert ("claim.approved", str(both["c-real"]["id"])) in actions
    assert ("claim.rejected", str(both["c-squatter"]["id"])) in actions
    assert ("claim.conflict", str(both["c-real"]["id"])) in actions


def test_a_late_squatter_never_gets_credentials_without_approval(db, settings, runner):
    token = claims.create_token(db, settings, "ESP32_GENERIC", uses=5, hours=1,
                                auto_approve=True, actor="tech")
    real = _ask(db, settings, token, "c-real")
    assert real["state"] == "issued"
    for _ in range(3):  # asking again changes nothing
        assert _ask(db, settings, token, "c-squatter") == {"state": "pending"}
    assert set(identity_store.active_mqtt_hashes(db)) == {f"pl-{MAC}"}
    assert brokerauth.verify_password(real["mqtt"]["password"],
                                      identity_store.active_mqtt_hashes(db)[f"pl-{MAC}"])
    squatter = identity_store.get_claim(db, MAC, "c-squatter")
    r = runner.invoke(cli, ["claim", "list", "--state", "pending"])
    assert r.exit_code == 0 and "CONFLICT" in r.output, r.output
    r = runner.invoke(cli, ["claim", "reject", str(squatter["id"]), "--reason", "squatter"])
    assert r.exit_code == 0, r.output
    assert _ask(db, settings, token, "c-squatter") == {"state": "rejected", "reason": "squatter"}
    assert identity_store.get_credentials(db, f"pl-{MAC}")["revoked_at"] is None


def test_two_pending_claims_for_one_mac_the_operator_picks_one(db, settings):
    token = claims.create_token(db, settings, "ESP32_GENERIC", uses=5, hours=1, actor="tech")
    assert _ask(db, settings, token, "c-squatter") == {"state": "pending"}
    assert _ask(db, settings, token, "c-real") == {"state": "pending"}
    pending = identity_store.list_claims(db, state="pending")
    assert {c["client_id"] for c in pending} == {"c-squatter", "c-real"}
    real = identity_store.get_claim(db, MAC, "c-real")
    claims.decide(db, real["id"], True, "tech", settings=settings)
    # Approving one rejects the others for that hardware id, with the reason.
    answer = _ask(db, settings, token, "c-squatter")
    assert answer["state"] == "rejected" and f"claim {real['id']}" in answer["reason"]
    assert _ask(db, settings, token, "c-real")["state"] == "issued"
    assert identity_store.get_claim_token(db, token.split(".")[0])["uses"] == 1


def test_the_provisioning_page_shows_both_requests_side_by_side(client, db, settings, user,
                                                                form_token):
    token = claims.create_token(db, settings, "ESP32_GENERIC", uses=5, hours=1, actor="tech")
    _ask(db, settings, token, "c-squatter")
    _ask(db, settings, token, "c-real")
    client.post("/auth/login", data={"username": user[0], "password": user[1],
                                     "csrf_token": form_token(client, "/auth/login")})
    page = client.get("/provision/").get_data(as_text=True)
    assert f"2 boards claim MAC <code>{MAC}</code>" in page
    assert "c-squatter" in page and "c-real" in page
