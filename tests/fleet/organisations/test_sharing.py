"""Sharing and moving nodes between organisations (issue 18)."""

import pytest

from fleet.store import audit as audit_store
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store.base import StoreError, UnknownNode
from fleet.store.scope import EVERYTHING, Scope, set_scope
from fleet.web import auth


@pytest.fixture
def two(db):
    parking = Scope(orgs.add_organisation(db, "parking"))
    environment = Scope(orgs.add_organisation(db, "environment"))
    set_scope(db, parking)
    node_store.enrol_node(db, "p-temp", tags=["temperature"])
    node_store.enrol_node(db, "p-bay")
    set_scope(db, EVERYTHING)
    return db, parking, environment


def test_a_shared_tag_is_readable_marked_shared_and_never_commandable(two):
    db, _parking, environment = two
    grant = orgs.share(db, "parking", "environment", tag="temperature", actor="pat")
    set_scope(db, environment)
    assert node_store.known_node_ids(db) == {"p-temp"}  # not p-bay
    assert node_store.get_node(db, "p-temp")["shared"] is True
    with pytest.raises(node_store.SharedReadOnly):
        command_store.create_command(db, "p-temp", "reboot", 0, "eve")
    with pytest.raises(node_store.SharedReadOnly):
        node_store.set_place(db, "p-temp", 1.0, 2.0, "x")
    assert node_store.tag_nodes(db, ["p-temp"], "mine") == 0
    set_scope(db, EVERYTHING)
    orgs.revoke_share(db, grant, actor="pat")
    with pytest.raises(StoreError, match="no live grant"):
        orgs.revoke_share(db, grant)
    set_scope(db, environment)
    with pytest.raises(UnknownNode):
        node_store.get_node(db, "p-temp")
    set_scope(db, EVERYTHING)
    actions = [e["action"] for e in audit_store.audit_log(db)]
    assert "org.share" in actions and "org.unshare" in actions


def test_a_shared_node_reads_as_shared_over_the_api_and_refuses_commands(two, client):
    db, _parking, environment = two
    orgs.share(db, "parking", "environment", node_id="p-bay")
    set_scope(db, environment)
    headers = {"Authorization": f"Bearer {auth.create_token(db, 'env', 'admin')}"}
    r = client.get("/api/v1/nodes/p-bay", headers=headers)
    assert r.status_code == 200 and r.get_json()["shared"] is True
    r = client.post("/api/v1/nodes/p-bay/commands", json={"command": "reboot"}, headers=headers)
    assert r.status_code == 403 and "read-only" in r.get_json()["error"]
    assert client.get("/api/v1/nodes/p-temp", headers=headers).status_code == 404


def test_sharing_checks_what_it_is_given(two):
    db, _parking, _environment = two
    with pytest.raises(StoreError, match="no node 'e-1'"):
        orgs.share(db, "parking", "environment", node_id="e-1")
    with pytest.raises(StoreError, match="not both or neither"):
        orgs.share(db, "parking", "environment")
    with pytest.raises(StoreError, match="itself"):
        orgs.share(db, "parking", "parking", tag="x")


def test_moving_a_node_keeps_its_history_and_ends_its_grants(two):
    db, parking, environment = two
    db.conn.execute("INSERT INTO readings (node_id, t, qid, inst, value)"
                    " VALUES ('p-temp', 5, 0, 0, 21.5)")
    orgs.share(db, "parking", "environment", node_id="p-temp")
    orgs.move_node(db, "p-temp", "environment", actor="op")
    set_scope(db, parking)
    with pytest.raises(UnknownNode):
        node_store.get_node(db, "p-temp")
    assert [e["action"] for e in audit_store.audit_log(db)] == ["node.move"]
    set_scope(db, environment)
    assert node_store.get_node(db, "p-temp")["shared"] is False
    assert db.conn.execute("SELECT count(*) FROM readings WHERE node_id = 'p-temp'"
                           ).fetchone()[0] == 1
    set_scope(db, EVERYTHING)
    assert all(s["revoked_at"] for s in orgs.list_shares(db))
    with pytest.raises(StoreError, match="already in"):
        orgs.move_node(db, "p-temp", "environment")
