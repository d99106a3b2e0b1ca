"""Sharing and moving nodes between organisations (issue 18)."""

import pytest

from fleet.nodes import export
from fleet.store import alerts as alert_store
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


@pytest.mark.parametrize("remember", [False, True], ids=["worker", "request"])
def test_one_node_queries_see_exactly_the_nodes_the_lists_see(two, remember):
    """A query narrowed to one node tests its rows one by one (Scope.sees_node_row), a list
    against the set of visible nodes (Scope.visible_node_ids): the two must agree for every
    node and organisation, whatever grants say (own, by node, by tag, revoked, a tag the node
    does not carry, a grant its owner no longer gives after a move). On a request's connection
    (remember) the queries after get_node skip the test for a node it found readable, and must
    still agree."""
    db, parking, environment = two
    waste = Scope(orgs.add_organisation(db, "waste"))
    set_scope(db, waste)
    node_store.enrol_node(db, "w-bin", tags=["temperature"])
    node_store.enrol_node(db, "w-lid")
    node_store.enrol_node(db, "w-vent", tags=["temperature"])  # parking's tag grant: not this
    set_scope(db, EVERYTHING)
    orgs.share(db, "parking", "environment", tag="temperature")
    orgs.share(db, "waste", "environment", node_id="w-lid")
    orgs.revoke_share(db, orgs.share(db, "parking", "environment", node_id="p-bay"))
    orgs.share(db, "waste", "parking", node_id="w-bin")
    orgs.move_node(db, "w-bin", "environment", actor="op")  # waste's grant of it ends
    nodes = ["p-temp", "p-bay", "w-bin", "w-lid", "w-vent"]
    db.conn.execute("UPDATE nodes SET last_seen = 1")
    for node in nodes:
        command_store.create_command(db, node, "identify", 0, "op")
        db.conn.execute("INSERT INTO alerts (node_id, kind, opened) VALUES (?, 'offline', 0)",
                        (node,))
    alert_ids = {node: db.conn.execute("SELECT id FROM alerts WHERE node_id = ?",
                                       (node,)).fetchone()[0] for node in nodes}
    seen = {}
    for name, scope in (("parking", parking), ("environment", environment), ("waste", waste)):
        set_scope(db, scope, remember=remember)
        listed = node_store.known_node_ids(db)
        seen[name] = listed
        for node in nodes:
            try:
                node_store.get_node(db, node)
                got = True
            except UnknownNode:
                got = False
            one_by_one = {
                "get_node": got,
                "node_status": _found(node_store.node_status, db, node),
                "node_place": _found(node_store.node_place, db, node),
                "last_seen": node_store.last_seen(db, node) is not None,
                "list_commands": bool(command_store.list_commands(db, node)),
                "list_alerts": bool(alert_store.list_alerts(db, node_id=node)),
                "get_alert": _found(alert_store.get_alert, db, alert_ids[node]),
            }
            expected = node in listed
            assert all(v == expected for v in one_by_one.values()), (name, node, one_by_one)
    set_scope(db, EVERYTHING)
    assert seen == {"parking": {"p-temp", "p-bay"},
                    "environment": {"p-temp", "w-bin", "w-lid"},
                    "waste": {"w-lid", "w-vent"}}


def test_a_request_forgets_a_node_it_found_readable_once_its_move_takes_it_away(two):
    """A request's connection remembers the nodes it found readable (scope.set_scope
    remember=True). Approving a move that takes the node to the other organisation must end
    that: the same request then no longer finds it."""
    db, parking, environment = two
    orgs.share(db, "parking", "environment", node_id="p-temp")
    set_scope(db, environment)
    request = orgs.request_move(db, "p-temp", "parking", actor="eve")  # environment asks for it
    set_scope(db, parking, remember=True)
    node_store.get_node(db, "p-temp")  # found readable: remembered
    assert node_store.node_status(db, "p-temp") == "new"
    orgs.decide_move(db, request, approve=True, actor="pat")  # parking gives it away
    with pytest.raises(UnknownNode):
        node_store.node_status(db, "p-temp")
    with pytest.raises(UnknownNode):
        node_store.node_place(db, "p-temp")
    assert node_store.last_seen(db, "p-temp") is None
    assert command_store.list_commands(db, "p-temp") == []
    assert alert_store.list_alerts(db, node_id="p-temp") == []
    set_scope(db, environment, remember=True)
    assert node_store.get_node(db, "p-temp")["shared"] is False  # environment's own now


@pytest.mark.parametrize("taken_by", ["revoke", "move"])
def test_a_live_stream_ends_once_its_node_is_no_longer_visible(two, app, taken_by):
    """The node page's live stream reads on a connection of its own that outlives the request:
    it must keep the viewer's scope, so a revoked grant or a move ends it at its next read
    instead of streaming another organisation's node until the stream's time runs out."""
    db, _parking, _environment = two
    app.config.update(WTF_CSRF_ENABLED=False, LIVE_SECONDS=20, LIVE_IDLE=0.3)
    grant = orgs.share(db, "parking", "environment", node_id="p-temp")
    auth.create_user(db, "eve", "correct horse", "viewer")
    orgs.remove_member(db, "eve", "platform")
    orgs.set_member(db, "eve", "environment", "viewer")
    client = app.test_client()
    assert client.post("/auth/login", data={"username": "eve", "password": "correct horse"}
                       ).status_code == 302
    r = client.get("/nodes/p-temp/live", buffered=False)
    chunks = r.response
    assert next(chunks).startswith(b"retry: ")
    assert next(chunks).startswith(b"event: state\n")
    set_scope(db, EVERYTHING)
    if taken_by == "revoke":
        orgs.revoke_share(db, grant, actor="pat")
    else:
        orgs.add_organisation(db, "waste")
        orgs.move_node(db, "p-temp", "waste", actor="op")
    # Before it kept the node's state for the rest of its 20 s and ended without a word.
    assert next(chunks) == b"event: gone\ndata: {}\n\n"
    assert b"".join(chunks) == b""
    r.close()
    assert client.get("/nodes/p-temp/live").status_code == 404


def test_a_streamed_export_reads_each_node_with_the_requests_scope(two, client, monkeypatch):
    """A download reads on a connection of its own after the request has ended: a node shared
    by name can be named, and one whose grant is revoked while the download runs is left out
    when its turn comes."""
    db, _parking, environment = two
    monkeypatch.setattr(export, "ROWS_PER_CHUNK", 1)
    for node_id in ("p-bay", "p-temp"):
        db.conn.execute("INSERT INTO readings (node_id, t, qid, inst, value) VALUES"
                        " (?, 5, 0, 0, 21.5), (?, 6, 0, 0, 22.5)", (node_id, node_id))
        db.conn.execute("INSERT INTO latest (node_id, qid, inst, t, value) VALUES"
                        " (?, 0, 0, 6, 22.5)", (node_id,))
    orgs.share(db, "parking", "environment", node_id="p-bay")
    temp = orgs.share(db, "parking", "environment", node_id="p-temp")
    set_scope(db, environment)
    headers = {"Authorization": f"Bearer {auth.create_token(db, 'env', 'viewer')}"}
    set_scope(db, EVERYTHING)
    r = client.get("/api/v1/export?nodes=p-bay,p-temp", headers=headers, buffered=False)
    assert r.status_code == 200  # shared nodes can be named: before, "unknown node(s)"
    chunks = iter(r.response)
    assert next(chunks).startswith(b"node_id,time")  # the header and p-bay's first row
    orgs.revoke_share(db, temp, actor="pat")
    rest = b"".join(chunks).decode()
    r.close()
    assert rest.count("p-bay,") == 1 and "p-temp" not in rest
    assert client.get("/api/v1/export?nodes=p-temp", headers=headers).status_code == 404


def _found(get, *args) -> bool:
    try:
        get(*args)
    except StoreError:
        return False
    return True
