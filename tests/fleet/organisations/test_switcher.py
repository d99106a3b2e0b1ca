"""The organisation switcher: a user in two organisations acts for one at a time, with their
role there."""

from twoorgs import parking_and_environment

from fleet.store import orgs
from fleet.web import auth

PASSWORD = "correct horse"


def test_switching_scopes_every_page_and_the_role(app, db):
    client = app.test_client()
    app.config["WTF_CSRF_ENABLED"] = False
    parking, _environment = parking_and_environment(db)
    auth.create_user(db, "tess", PASSWORD, "viewer")
    orgs.remove_member(db, "tess", "platform")
    orgs.set_member(db, "tess", "parking", "technician")
    orgs.set_member(db, "tess", "environment", "viewer")
    assert client.post("/auth/login", data={"username": "tess", "password": PASSWORD}
                       ).status_code == 302
    page = client.get("/nodes/").get_data(as_text=True)
    # The first organisation by name is environment; the switcher offers both.
    assert "env-1" in page and "park-1" not in page
    assert 'aria-label="organisation"' in page and "parking (technician)" in page
    r = client.post("/organisations/switch", data={"org": str(parking), "next": "/nodes/"})
    assert r.status_code == 302 and r.headers["Location"] == "/nodes/"
    page = client.get("/nodes/").get_data(as_text=True)
    assert "park-1" in page and "env-1" not in page
    assert "tess · technician · parking" in page
    assert client.get("/nodes/env-1").status_code == 404
    # An organisation one does not belong to is a 404, as if it did not exist.
    assert client.post("/organisations/switch", data={"org": "1"}).status_code == 404
    assert client.post("/organisations/switch", data={"org": "x"}).status_code == 400
