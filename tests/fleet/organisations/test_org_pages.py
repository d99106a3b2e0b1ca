"""The organisations page's sharing and move requests (issue 18): every member reads them, only
an organisation's admin changes them, and each side sees the buttons that are its to press."""

import pytest

from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store.scope import EVERYTHING, Scope, set_scope
from fleet.web import auth

PASSWORD = "correct horse"


@pytest.fixture
def pages(app, db):
    app.config["WTF_CSRF_ENABLED"] = False  # CSRF itself: tests/fleet/web/test_access.py
    parking = orgs.add_organisation(db, "parking")
    environment = orgs.add_organisation(db, "environment")
    set_scope(db, Scope(parking))
    node_store.enrol_node(db, "p-air")
    node_store.enrol_node(db, "p-temp")
    auth.create_user(db, "pat", PASSWORD, "admin")
    set_scope(db, Scope(environment))
    auth.create_user(db, "eve", PASSWORD, "admin")
    auth.create_user(db, "vic", PASSWORD, "viewer")
    set_scope(db, EVERYTHING)

    def login(name):
        client = app.test_client()
        r = client.post("/auth/login", data={"username": name, "password": PASSWORD})
        assert r.status_code == 302
        return client

    return db, login, parking, environment


def _org_of(db, node_id):
    set_scope(db, EVERYTHING)
    return db.conn.execute("SELECT org_id FROM nodes WHERE id = ?", (node_id,)).fetchone()[0]


def test_an_admin_shares_and_revokes_on_the_page_and_a_viewer_only_reads(pages):
    db, login, _parking, _environment = pages
    pat, vic = login("pat"), login("vic")
    r = pat.post("/organisations/shares", data={"to": "environment", "node": "p-temp"},
                 follow_redirects=True)
    assert "reads node p-temp" in r.get_data(as_text=True)
    page = vic.get("/organisations/").get_data(as_text=True)
    assert "parking → environment" in page and "node p-temp" in page
    assert "Revoke" not in page and "Share</button>" not in page  # a viewer's page changes nothing
    grant = orgs.list_shares(db)[0]["id"]
    assert vic.post(f"/organisations/shares/{grant}/revoke").status_code == 403
    assert vic.post("/organisations/shares", data={"to": "parking", "node": "x"}
                    ).status_code == 403
    # The receiving side's admin cannot revoke what parking gave either (the store refuses).
    r = login("eve").post(f"/organisations/shares/{grant}/revoke", follow_redirects=True)
    assert f"Not revoked: no live grant {grant}" in r.get_data(as_text=True)
    page = pat.get("/organisations/").get_data(as_text=True)
    assert "Revoke" in page
    r = pat.post(f"/organisations/shares/{grant}/revoke", follow_redirects=True)
    assert f"Grant {grant} revoked." in r.get_data(as_text=True)
    # A node not parking's is not shared, and the answer says so without naming its owner.
    r = pat.post("/organisations/shares", data={"to": "environment", "node": "nowhere"},
                 follow_redirects=True)
    assert "Not shared: organisation &#39;parking&#39; has no node &#39;nowhere&#39;" in r.get_data(
        as_text=True)


def test_a_move_asked_on_the_page_is_approved_by_the_other_side_only(pages):
    db, login, parking, environment = pages
    pat, eve, vic = login("pat"), login("eve"), login("vic")
    r = pat.post("/organisations/moves", data={"node": "p-air", "to": "environment"},
                 follow_redirects=True)
    assert "waiting for environment&#39;s decision" in r.get_data(as_text=True)
    rid = orgs.list_moves(db)[0]["id"]
    asker = pat.get("/organisations/").get_data(as_text=True)
    assert "Cancel" in asker and "Approve" not in asker
    decider = eve.get("/organisations/").get_data(as_text=True)
    assert "Approve" in decider and "Reject" in decider and "Cancel" not in decider
    assert "Approve" not in vic.get("/organisations/").get_data(as_text=True)
    assert vic.post(f"/organisations/moves/{rid}/approve").status_code == 403
    assert pat.post(f"/organisations/moves/{rid}/approve").status_code == 404  # not its to decide
    assert _org_of(db, "p-air") == parking
    r = eve.post(f"/organisations/moves/{rid}/approve", follow_redirects=True)
    assert f"Move request {rid} (node p-air) approved." in r.get_data(as_text=True)
    assert _org_of(db, "p-air") == environment
    assert eve.post(f"/organisations/moves/{rid}/reject").status_code == 404  # decided
