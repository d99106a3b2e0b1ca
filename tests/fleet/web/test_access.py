"""Taking access back (#19): sessions end on the server, tokens are revoked, users disabled."""

from fleet.store import users as user_store


def replay(app, cookie):
    """A fresh client that presents a copied session cookie."""
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


def test_a_copied_cookie_stops_working_after_logout(app, logged_in, form_token):
    cookie = logged_in.get_cookie("session").value
    assert replay(app, cookie).get("/nodes/").status_code == 200
    logged_in.post("/auth/logout", data={"csrf_token": form_token(logged_in, "/nodes/")})
    r = replay(app, cookie).get("/nodes/")
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]


def test_a_role_change_ends_the_users_sessions(app, logged_in, db):
    cookie = logged_in.get_cookie("session").value
    user_store.set_user_role(db, "alice", "viewer", actor="test")
    r = replay(app, cookie).get("/nodes/")
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]


def test_a_cookie_without_the_epoch_is_refused(app, logged_in, db):
    with logged_in.session_transaction() as s:
        s.pop("epoch")
    assert logged_in.get("/nodes/").status_code == 302
