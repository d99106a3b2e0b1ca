"""Moving a node between organisations, approved by both sides (issue 18): one side asks, the
other decides; the node keeps its id and history; everything audited in both; nobody else sees
or decides the request."""

import pytest
from polylink import proto
from routewalk import frame

from fleet import cli
from fleet.ingest import Ingest
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store.base import StoreError, UnknownNode
from fleet.store.scope import EVERYTHING, Scope, set_scope


@pytest.fixture
def three(db):
    parking = Scope(orgs.add_organisation(db, "parking"))
    environment = Scope(orgs.add_organisation(db, "environment"))
    waste = Scope(orgs.add_organisation(db, "waste"))
    set_scope(db, parking)
    node_store.enrol_node(db, "p-air")
    node_store.enrol_node(db, "p-temp")
    set_scope(db, EVERYTHING)
    ing = Ingest(db)
    for seq in range(3):
        ing.add("pl/v1/p-air/up", frame(proto.TELEMETRY, seq, [(0, 0, 20.0 + seq)]), 1e9 + seq)
    ing.flush()
    return db, parking, environment, waste


def _org_of(db, node_id):
    set_scope(db, EVERYTHING)
    return db.conn.execute("SELECT org_id FROM nodes WHERE id = ?", (node_id,)).fetchone()[0]


def _readings(db, node_id):
    set_scope(db, EVERYTHING)
    return db.conn.execute("SELECT count(*) FROM readings WHERE node_id = ?",
                           (node_id,)).fetchone()[0]


def _audit(db, org, action):
    set_scope(db, EVERYTHING)
    return db.conn.execute("SELECT count(*) FROM audit WHERE org_id = ? AND action = ?",
                           (org.org_id, action)).fetchone()[0]


def test_a_move_the_owner_asks_for_happens_only_when_the_other_side_approves(three):
    db, parking, environment, waste = three
    before = _readings(db, "p-air")
    set_scope(db, parking)
    rid = orgs.request_move(db, "p-air", "environment", actor="pat")
    with pytest.raises(StoreError, match="already waiting"):
        orgs.request_move(db, "p-air", "environment")
    # The asking side cannot approve its own request; a third organisation does not see it.
    with pytest.raises(orgs.UnknownMoveRequest):
        orgs.decide_move(db, rid, True)
    set_scope(db, waste)
    assert orgs.list_moves(db) == []
    with pytest.raises(orgs.UnknownMoveRequest):
        orgs.decide_move(db, rid, True)
    with pytest.raises(orgs.UnknownMoveRequest):
        orgs.cancel_move(db, rid)
    assert _org_of(db, "p-air") == parking.org_id  # nothing moved yet
    set_scope(db, environment)
    assert [(m["id"], m["state"], m["from_org"]) for m in orgs.list_moves(db)] == [
        (rid, "pending", "parking")]
    with pytest.raises(orgs.UnknownMoveRequest):  # cancelling is the asker's
        orgs.cancel_move(db, rid)
    assert orgs.decide_move(db, rid, True, actor="eve")["state"] == "approved"
    assert _org_of(db, "p-air") == environment.org_id
    assert _readings(db, "p-air") == before  # its history came along
    for org in (parking, environment):
        assert _audit(db, org, "node.move.request") == 1
        assert _audit(db, org, "node.move.approve") == 1
        assert _audit(db, org, "node.move") == 1
    set_scope(db, environment)
    with pytest.raises(orgs.UnknownMoveRequest):  # decided once
        orgs.decide_move(db, rid, False)


def test_rejected_cancelled_and_expired_requests_move_nothing(three):
    db, parking, environment, _waste = three
    set_scope(db, parking)
    rejected = orgs.request_move(db, "p-air", "environment")
    set_scope(db, environment)
    orgs.decide_move(db, rejected, False, actor="eve")
    set_scope(db, parking)
    cancelled = orgs.request_move(db, "p-air", "environment")
    orgs.cancel_move(db, cancelled, actor="pat")
    old = orgs.request_move(db, "p-air", "environment")
    set_scope(db, EVERYTHING)
    db.conn.execute("UPDATE move_requests SET requested_at = requested_at - ? WHERE id = ?",
                    (orgs.MOVE_REQUEST_DAYS * 86400 + 1, old))
    set_scope(db, environment)
    with pytest.raises(orgs.UnknownMoveRequest):
        orgs.decide_move(db, old, True)
    assert {m["id"]: m["state"] for m in orgs.list_moves(db)} == {
        rejected: "rejected", cancelled: "cancelled", old: "expired"}
    assert _org_of(db, "p-air") == parking.org_id
    set_scope(db, parking)
    orgs.request_move(db, "p-air", "environment")  # an expired request does not block a new one


def test_an_organisation_asks_the_owner_for_a_node_shared_with_it_and_only_that(three):
    db, parking, environment, _waste = three
    set_scope(db, environment)
    with pytest.raises(UnknownNode):  # not shared: it does not exist for environment
        orgs.request_move(db, "p-temp", "parking")
    set_scope(db, EVERYTHING)
    orgs.share(db, "parking", "environment", node_id="p-temp")
    set_scope(db, environment)
    rid = orgs.request_move(db, "p-temp", "parking", actor="eve")
    with pytest.raises(orgs.UnknownMoveRequest):  # the owner decides, not the asker
        orgs.decide_move(db, rid, True)
    set_scope(db, parking)
    orgs.decide_move(db, rid, True, actor="pat")
    assert _org_of(db, "p-temp") == environment.org_id


def test_the_cli_asks_lists_and_approves_as_each_organisation(three, runner):
    db, _parking, environment, _waste = three

    def run(*args):
        r = runner.invoke(cli.cli, list(args))
        assert r.exit_code == 0, r.output
        return r.output

    out = run("--org", "parking", "org", "move-request", "p-air", "--to", "environment")
    rid = int(out.split()[2].rstrip(":"))
    assert "p-air  parking -> environment  asked by parking" in run(
        "--org", "environment", "org", "moves")
    r = runner.invoke(cli.cli, ["--org", "waste", "org", "move-approve", str(rid)])
    assert r.exit_code == 1 and f"no pending move request {rid}" in r.output
    assert "the node moved" in run("--org", "environment", "org", "move-approve", str(rid))
    assert _org_of(db, "p-air") == environment.org_id
