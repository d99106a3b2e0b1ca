"""Claims over the API and the CLI: list pending claims, approve or reject them (audited)."""

import time

from fleet.cli import cli
from fleet.store import audit as audit_store
from fleet.store import identity as identity_store
from fleet.web.auth import create_token


def _claims(db):
    identity_store.add_claim_token(db, "ct1", "hash", "ESP32_GENERIC", 10, time.time() + 3600,
                                   False, "cli")
    return [identity_store.add_claim(db, "ct1", f"c{i}", f"aabbccddee0{i}", "ESP32_GENERIC")["id"]
            for i in range(3)]


def _headers(db, role):
    return {"Authorization": "Bearer " + create_token(db, f"t-{role}", role=role)}


def test_list_approve_reject_over_the_api(client, db):
    a, b, c = _claims(db)
    viewer, tech = _headers(db, "viewer"), _headers(db, "technician")
    r = client.get("/api/v1/claims", headers=viewer)
    assert r.status_code == 200
    assert [x["id"] for x in r.json["claims"]] == [c, b, a]
    first = r.json["claims"][-1]
    assert first["state"] == "pending" and first["mac"] == "aabbccddee00"
    assert first["token_id"] == "ct1" and "secret" not in str(r.json)
    # Technicians and up decide; a viewer may only look.
    assert client.post(f"/api/v1/claims/{a}/approve", headers=viewer).status_code == 403
    r = client.post(f"/api/v1/claims/{a}/approve", headers=tech)
    assert r.status_code == 200 and r.json["state"] == "approved"
    assert r.json["decided_by"] == "token:t-technician"
    r = client.post(f"/api/v1/claims/{b}/reject", headers=tech, json={"reason": "not ours"})
    assert r.json["state"] == "rejected" and r.json["reason"] == "not ours"
    # Only pending claims are listed by default; a decided one cannot be decided again.
    assert [x["id"] for x in client.get("/api/v1/claims", headers=viewer).json["claims"]] == [c]
    everything = client.get("/api/v1/claims?state=all", headers=viewer).json["claims"]
    assert {x["id"]: x["state"] for x in everything} == {a: "approved", b: "rejected",
                                                          c: "pending"}
    r = client.post(f"/api/v1/claims/{a}/reject", headers=tech)
    assert r.status_code == 409 and "not waiting for a decision" in r.json["error"]
    assert client.post("/api/v1/claims/999/approve", headers=tech).status_code == 404
    assert client.post(f"/api/v1/claims/{c}/approve", headers=tech,
                       json={"reason": 5}).status_code == 400
    assert client.post(f"/api/v1/claims/{c}/approve", headers=tech,
                       json={"why": "x"}).status_code == 400
    assert client.get("/api/v1/claims?state=lost", headers=viewer).status_code == 400
    assert client.get("/api/v1/claims").status_code == 401
    assert identity_store.get_claim_by_id(db, c)["state"] == "pending"
    log = {(e["action"], e["target"]): e for e in audit_store.audit_log(db)}
    assert log[("claim.approved", str(a))]["actor"] == "token:t-technician"
    assert "not ours" in log[("claim.rejected", str(b))]["detail"]


def test_claims_from_the_cli(runner, db):
    a, b, c = _claims(db)
    assert runner.invoke(cli, ["claim", "approve", str(a)]).exit_code == 0
    r = runner.invoke(cli, ["claim", "reject", str(b), "--reason", "stolen"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["claim", "list", "--state", "pending"])
    assert r.exit_code == 0 and "aabbccddee02" in r.output and "aabbccddee00" not in r.output
    r = runner.invoke(cli, ["claim", "approve", str(b)])
    assert r.exit_code == 1 and "not waiting for a decision" in r.output
    assert audit_store.audit_log(db, actor="cli")[0]["action"] == "claim.rejected"
