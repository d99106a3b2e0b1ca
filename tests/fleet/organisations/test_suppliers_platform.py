"""Suppliers write SenML to any node they are given, and suppliers do not belong to an
organisation yet: only the platform operator's organisation sees or manages them."""

from fleet.store import orgs
from fleet.store.scope import EVERYTHING, Scope, set_scope
from fleet.web import auth


def test_another_organisations_admin_neither_sees_nor_manages_suppliers(client, db):
    parking = orgs.add_organisation(db, "parking")
    set_scope(db, Scope(parking))
    park = {"Authorization": f"Bearer {auth.create_token(db, 'park-admin', 'admin')}"}
    set_scope(db, EVERYTHING)
    platform = {"Authorization": f"Bearer {auth.create_token(db, 'city-admin', 'admin')}"}
    r = client.post("/api/v1/suppliers", json={"name": "acme"}, headers=platform)
    assert r.status_code == 201, r.get_json()

    assert client.get("/api/v1/suppliers", headers=park).get_json() == []
    r = client.post("/api/v1/suppliers", json={"name": "rogue"}, headers=park)
    assert r.status_code == 403 and "platform operator" in r.get_json()["error"]
    assert client.delete("/api/v1/suppliers/acme", headers=park).status_code == 403
    r = client.put("/api/v1/nodes/any/supplier", json={"supplier": "acme"}, headers=park)
    assert r.status_code == 403

    assert [s["name"] for s in client.get("/api/v1/suppliers", headers=platform).get_json()] == [
        "acme"]
    assert db.conn.execute("SELECT count(*) FROM suppliers").fetchone()[0] == 1
