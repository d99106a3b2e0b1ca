"""Quotas per organisation (issue 18): what happens at the limit is a clear error."""

from fleet.store import orgs
from fleet.store.scope import EVERYTHING, Scope, set_scope
from fleet.web import auth


def test_api_requests_per_minute_end_in_a_429_that_says_why_and_when(client, db):
    limited = orgs.add_organisation(db, "parking", max_requests_per_minute=2)
    set_scope(db, Scope(limited))
    token = auth.create_token(db, "park-token", "viewer")
    set_scope(db, EVERYTHING)
    other = auth.create_token(db, "platform-token", "viewer")
    headers = {"Authorization": f"Bearer {token}"}
    assert [client.get("/api/v1/nodes", headers=headers).status_code for _ in range(2)] == [
        200, 200]
    r = client.get("/api/v1/nodes", headers=headers)
    assert r.status_code == 429
    assert "quota of 2 API requests per minute" in r.get_json()["error"]
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    # Another organisation's budget is its own (the platform's has no limit).
    for _ in range(4):
        assert client.get("/api/v1/nodes",
                          headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_registering_past_the_node_quota_is_refused_with_the_reason(client, db):
    limited = orgs.add_organisation(db, "parking", max_nodes=1)
    set_scope(db, Scope(limited))
    token = auth.create_token(db, "park-admin", "admin")
    set_scope(db, EVERYTHING)
    headers = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/nodes", json={"id": "park-1", "board": "ESP32_GENERIC"},
                    headers=headers)
    assert r.status_code == 201, r.get_json()
    r = client.post("/api/v1/nodes", json={"id": "park-2", "board": "ESP32_GENERIC"},
                    headers=headers)
    assert r.status_code in (400, 409) and "quota is 1" in r.get_json()["error"]
    assert db.conn.execute("SELECT count(*) FROM nodes WHERE org_id = ?",
                           (limited,)).fetchone()[0] == 1
