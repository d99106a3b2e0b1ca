"""Organisations (issue 18): the migration makes an existing fleet the platform operator's
organisation, and the scope on a connection is the one organisation filter of the store.

The migration is tried on both dialects in every run (PostgreSQL in the run's throwaway cluster).
"""

import pytest

from fleet.store import audit as audit_store
from fleet.store import migrate, orgs
from fleet.store import nodes as node_store
from fleet.store.base import UnknownNode, connect
from fleet.store.scope import EVERYTHING, PLATFORM_ORG, Scope, set_scope

FILLED = [
    "INSERT INTO users (name, password_hash, role, created) VALUES ('ann', 'h', 'admin', 0)",
    "INSERT INTO users (name, password_hash, role, created) VALUES ('bob', 'h', 'technician', 0)",
    "INSERT INTO nodes (id, created, tags) VALUES ('n1', 0, '[\"air\"]')",
    "INSERT INTO nodes (id, created) VALUES ('n2', 0)",
    "INSERT INTO readings (node_id, t, qid, inst, value) VALUES ('n1', 5, 0, 0, 21.5)",
    "INSERT INTO alerts (node_id, kind, opened) VALUES ('n1', 'offline', 1)",
    "INSERT INTO audit (t, actor, action, target) VALUES (2, 'ann', 'node.edit', 'n1')",
    "INSERT INTO api_tokens (name, token_hash, created, role) VALUES ('ci', 'x', 0, 'viewer')",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def at_27(request, tmp_path):
    """A store at schema version 27 (before organisations), empty, on each dialect."""
    if request.param == "sqlite":
        db = connect(tmp_path / "fleet.db")
        yield db
        db.conn.close()
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"orgs{id(request)}"
    cluster.sql(f"CREATE DATABASE {name}")
    db = connect(cluster.url(name))
    yield db
    db.conn.close()
    cluster.drop(name)


def test_an_existing_fleet_becomes_the_platform_organisation_with_everything(at_27):
    db = at_27
    migrate.migrate(db, target=27)
    for statement in FILLED:
        db.conn.execute(statement)
    assert migrate.migrate(db) == (27, migrate.SCHEMA_VERSION)
    [platform] = orgs.list_organisations(db)
    assert (platform["id"], platform["platform"], platform["nodes"], platform["members"]) == (
        PLATFORM_ORG, 1, 2, 2)
    roles = {r["name"]: r["role"] for r in db.query(
        "SELECT u.name, m.role FROM memberships m JOIN users u ON u.id = m.user_id"
        " WHERE m.org_id = 1")}
    assert roles == {"ann": "admin", "bob": "technician"}  # each keeps the role they had
    for table in ("nodes", "alerts", "audit", "api_tokens", "device_profiles"):
        assert db.conn.execute(f"SELECT count(*) FROM {table} WHERE org_id != 1"
                               ).fetchone()[0] == 0, table
    # History stays and the platform's scope reads it.
    set_scope(db, orgs.scope_for(db, PLATFORM_ORG))
    assert node_store.get_node(db, "n1")["tags"] == ["air"]
    assert db.conn.execute("SELECT value FROM readings WHERE node_id = 'n1'").fetchone()[0] == 21.5
    assert [e["action"] for e in audit_store.audit_log(db)] == ["node.edit"]
    # A second organisation gets the next id on both dialects (the identity was not skipped).
    assert orgs.add_organisation(db, "parking") == 2


@pytest.fixture
def two_orgs(db):
    """The platform plus parking (p1, p2) and environment (e1) with their nodes."""
    parking = orgs.add_organisation(db, "parking")
    environment = orgs.add_organisation(db, "environment")
    for org, ids in ((parking, ("p1", "p2")), (environment, ("e1",))):
        set_scope(db, Scope(org))
        for node_id in ids:
            node_store.enrol_node(db, node_id, tags=["temp"] if node_id == "p2" else [])
    set_scope(db, EVERYTHING)
    return db, Scope(parking), Scope(environment)


def test_a_scope_sees_only_its_organisations_nodes(two_orgs):
    db, parking, environment = two_orgs
    assert node_store.known_node_ids(db) == {"p1", "p2", "e1"}  # the platform sees all
    set_scope(db, environment)
    assert node_store.known_node_ids(db) == {"e1"}
    assert node_store.count_nodes(db) == 1
    rows, total = node_store.query_nodes(db, {})
    assert ([r["id"] for r in rows], total) == (["e1"], 1)
    assert node_store.overview(db)["all"]["total"] == 1
    with pytest.raises(UnknownNode):
        node_store.get_node(db, "p1")
    with pytest.raises(UnknownNode):
        node_store.set_place(db, "p1", 1.0, 2.0, "x")
    assert node_store.tag_nodes(db, ["p1", "e1"], "mine") == 1  # p1 untouched
    set_scope(db, parking)
    assert node_store.get_node(db, "p1")["tags"] == []


def test_audit_records_belong_to_the_organisation_that_acted(two_orgs):
    db, parking, environment = two_orgs
    set_scope(db, parking)
    node_store.set_place(db, "p1", 1.0, 2.0, "depot", actor="pat")
    assert [e["target"] for e in audit_store.audit_log(db)] == ["p1"]
    set_scope(db, environment)
    assert audit_store.audit_log(db) == []


def test_the_node_quota_is_a_clear_error_and_stores_nothing(two_orgs):
    db, parking, _environment = two_orgs
    orgs.set_quotas(db, "parking", max_nodes=2)
    set_scope(db, parking)
    with pytest.raises(node_store.NodeQuotaReached, match="holds 2 nodes, its quota is 2"):
        node_store.enrol_node(db, "p3")
    node_store.enrol_node(db, "p1")  # enrolling a node it has is no new node
    assert node_store.known_node_ids(db) == {"p1", "p2"}


def test_memberships_give_a_role_per_organisation(two_orgs):
    db, _parking, _environment = two_orgs
    db.conn.execute("INSERT INTO users (name, password_hash, role, created)"
                    " VALUES ('tess', 'h', 'viewer', 0)")
    orgs.set_member(db, "tess", "parking", "technician")
    orgs.set_member(db, "tess", "environment", "viewer")
    uid = db.conn.execute("SELECT id FROM users WHERE name = 'tess'").fetchone()[0]
    assert [(m["name"], m["role"]) for m in orgs.memberships(db, uid)] == [
        ("environment", "viewer"), ("parking", "technician")]
    orgs.remove_member(db, "tess", "parking")
    with pytest.raises(orgs.NotAMember):
        orgs.remove_member(db, "tess", "parking")
    with pytest.raises(orgs.UnknownOrganisation):
        orgs.set_member(db, "tess", "nowhere", "viewer")
