"""Taking access back (#19): sessions end on the server, tokens are revoked, users disabled."""

from fleet import cli
from fleet.store import audit as audit_store
from fleet.store import users as user_store
from fleet.web import auth


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


# --- API tokens: last use, list, revoke ----------------------------------------------------------


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def token_row(db, name):
    return {t["name"]: t for t in user_store.list_tokens(db)}[name]


def test_last_used_is_written_at_most_once_a_minute(client, db):
    token = auth.create_token(db, "script", "viewer")
    assert token_row(db, "script")["last_used"] is None
    assert client.get("/api/v1/nodes", headers=bearer(token)).status_code == 200
    first = token_row(db, "script")["last_used"]
    assert first is not None
    client.get("/api/v1/nodes", headers=bearer(token))
    assert token_row(db, "script")["last_used"] == first  # throttled
    user_store.use_token(db, token, now=first + user_store.TOUCH_EVERY)
    assert token_row(db, "script")["last_used"] == first + user_store.TOUCH_EVERY


def test_a_revoked_token_answers_401_and_the_revoke_is_audited(client, db):
    admin = auth.create_token(db, "admin-script", "admin")
    victim = auth.create_token(db, "leaked", "operator", actor="alice")
    assert client.get("/api/v1/nodes", headers=bearer(victim)).status_code == 200
    listed = client.get("/api/v1/tokens", headers=bearer(admin)).get_json()["tokens"]
    leaked = {t["name"]: t for t in listed}["leaked"]
    assert leaked["created_by"] == "alice" and leaked["last_used"] and leaked["revoked"] is None
    assert client.get("/api/v1/tokens", headers=bearer(victim)).status_code == 403
    r = client.post("/api/v1/tokens/leaked/revoke", headers=bearer(admin))
    assert r.status_code == 200, r.get_json()
    assert client.get("/api/v1/nodes", headers=bearer(victim)).status_code == 401
    assert client.post("/api/v1/tokens/leaked/revoke", headers=bearer(admin)).status_code == 404
    entry = audit_store.audit_log(db, target="leaked", limit=1)[0]
    assert (entry["actor"], entry["action"]) == ("token:admin-script", "token.revoke")


def test_admin_page_lists_and_revokes_tokens(client, logged_in, db, form_token):
    token = auth.create_token(db, "grafana", "viewer")
    client.get("/api/v1/nodes", headers=bearer(token))
    page = logged_in.get("/admin/users").get_data(as_text=True)
    assert "grafana" in page and "never used" not in page
    r = logged_in.post("/admin/tokens/revoke", data={
        "name": "grafana", "csrf_token": form_token(logged_in, "/admin/users")})
    assert r.status_code == 302
    assert client.get("/api/v1/nodes", headers=bearer(token)).status_code == 401
    assert "revoked" in logged_in.get("/admin/users").get_data(as_text=True)
    assert audit_store.audit_log(db, target="grafana", limit=1)[0]["actor"] == "alice"


def test_cli_lists_and_revokes_tokens(runner, db):
    token = runner.invoke(cli.cli, ["token", "create", "ci", "--role", "viewer"]).output.strip()
    r = runner.invoke(cli.cli, ["token", "list"])
    assert r.exit_code == 0 and "ci" in r.output and "live" in r.output
    r = runner.invoke(cli.cli, ["token", "revoke", "ci"])
    assert r.exit_code == 0, r.output
    assert user_store.token_info(db, token) is None
    assert "revoked" in runner.invoke(cli.cli, ["token", "list"]).output
    r = runner.invoke(cli.cli, ["token", "revoke", "ci"])
    assert r.exit_code == 1 and "no live token 'ci'" in r.output


# --- Users: disable, rename, passwords -----------------------------------------------------------


def log_in(app, form_token, name, password):
    client = app.test_client()
    r = client.post("/auth/login", data={"username": name, "password": password,
                                         "csrf_token": form_token(client, "/auth/login")})
    return client, r.status_code


def test_a_disabled_user_cannot_log_in_and_their_sessions_and_tokens_end(app, db, form_token,
                                                                        user):
    auth.create_user(db, "bob", "bobs-password", "operator")
    bob, status = log_in(app, form_token, "bob", "bobs-password")
    assert status == 302
    token = auth.create_token(db, "bobs-script", "viewer", actor="bob")
    other = auth.create_token(db, "other", "viewer", actor="cli")
    admin, _ = log_in(app, form_token, "alice", "correct horse")
    r = admin.post("/admin/users/manage", data={
        "name": "bob", "action": "disable", "csrf_token": form_token(admin, "/admin/users")})
    assert r.status_code == 302
    assert bob.get("/nodes/").status_code == 302
    assert log_in(app, form_token, "bob", "bobs-password")[1] == 401
    assert app.test_client().get("/api/v1/nodes", headers=bearer(token)).status_code == 401
    assert app.test_client().get("/api/v1/nodes", headers=bearer(other)).status_code == 200
    entry = audit_store.audit_log(db, target="bob", limit=1)[0]
    assert (entry["actor"], entry["action"]) == ("alice", "user.disable")
    admin.post("/admin/users/manage", data={
        "name": "bob", "action": "enable", "csrf_token": form_token(admin, "/admin/users")})
    assert log_in(app, form_token, "bob", "bobs-password")[1] == 302


def test_admin_renames_and_resets_a_user(app, db, form_token, logged_in):
    auth.create_user(db, "bob", "bobs-password", "viewer")
    bob, _ = log_in(app, form_token, "bob", "bobs-password")
    token = form_token(logged_in, "/admin/users")
    r = logged_in.post("/admin/users/manage", data={
        "name": "bob", "action": "rename", "new_name": "robert", "csrf_token": token})
    assert r.status_code == 302 and user_store.get_user(db, "robert") is not None
    r = logged_in.post("/admin/users/manage", data={
        "name": "robert", "action": "reset", "csrf_token": token})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "shown this once" in page
    new = page.split("shown this once: <code>")[1].split("</code>")[0]
    assert bob.get("/nodes/").status_code == 302  # the reset ended his session
    assert log_in(app, form_token, "robert", "bobs-password")[1] == 401
    robert, status = log_in(app, form_token, "robert", new)
    assert status == 302
    # The reset password is one-time: every page leads to the password page until it is changed.
    r = robert.get("/nodes/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/account/password")
    r = robert.post("/account/password", data={
        "old": new, "new": "roberts-own-pass", "csrf_token": form_token(robert,
                                                                        "/account/password")})
    assert r.status_code == 302 and robert.get("/nodes/").status_code == 200
    actions = [e["action"] for e in audit_store.audit_log(db, actor="alice")]
    assert "user.rename" in actions and "user.reset" in actions
    assert new not in str(audit_store.audit_log(db, limit=100))


def test_a_user_changes_their_own_password_with_the_old_one(app, db, form_token):
    auth.create_user(db, "vera", "veras-password", "viewer")
    here, _ = log_in(app, form_token, "vera", "veras-password")
    there, _ = log_in(app, form_token, "vera", "veras-password")
    token = form_token(here, "/account/password")
    r = here.post("/account/password", data={"old": "wrong-one", "new": "a-new-password",
                                             "csrf_token": token})
    assert r.status_code == 400 and "old password is wrong" in r.get_data(as_text=True)
    r = here.post("/account/password", data={"old": "veras-password", "new": "a-new-password",
                                             "csrf_token": token})
    assert r.status_code == 302
    assert here.get("/nodes/").status_code == 200  # this session goes on
    assert there.get("/nodes/").status_code == 302  # the other one ended
    assert log_in(app, form_token, "vera", "a-new-password")[1] == 302
    assert audit_store.audit_log(db, target="vera", limit=1)[0]["action"] == "user.password"


def test_cli_disables_renames_and_resets_users(runner, db):
    auth.create_user(db, "carl", "carls-password", "operator")
    auth.create_token(db, "carls", "viewer", actor="carl")
    r = runner.invoke(cli.cli, ["user", "disable", "carl"])
    assert r.exit_code == 0 and "1 token(s) revoked" in r.output
    assert auth.check_password(db, "carl", "carls-password") is None
    assert runner.invoke(cli.cli, ["user", "enable", "carl"]).exit_code == 0
    r = runner.invoke(cli.cli, ["user", "rename", "carl", "carla"])
    assert r.exit_code == 0 and user_store.get_user(db, "carla") is not None
    r = runner.invoke(cli.cli, ["user", "passwd", "carla", "--password-stdin"],
                      input="wrong\nnew-password-1\n")
    assert r.exit_code == 1 and "old password is wrong" in r.output
    r = runner.invoke(cli.cli, ["user", "passwd", "carla", "--password-stdin"],
                      input="carls-password\nnew-password-1\n")
    assert r.exit_code == 0 and auth.check_password(db, "carla", "new-password-1")
    r = runner.invoke(cli.cli, ["user", "reset", "carla"])
    assert r.exit_code == 0 and auth.check_password(db, "carla", r.output.strip())
    r = runner.invoke(cli.cli, ["user", "disable", "nobody"])
    assert r.exit_code == 1 and "unknown user 'nobody'" in r.output
    actions = [e["action"] for e in audit_store.audit_log(db, actor="cli")]
    assert {"user.disable", "user.enable", "user.rename", "user.password", "user.reset"} <= set(
        actions)


# --- users through the API -----------------------------------------------------------------------


def test_the_api_disables_renames_and_resets_users(client, db):
    admin = bearer(auth.create_token(db, "admin-script", "admin"))
    auth.create_user(db, "sam", "a long password", "technician")
    sams = auth.create_token(db, "sams-script", "viewer", actor="sam")
    listed = {u["name"]: u for u in client.get("/api/v1/users", headers=admin).get_json()["users"]}
    assert listed["sam"]["role"] == "technician" and listed["sam"]["disabled"] is None
    r = client.post("/api/v1/users/sam/disable", headers=admin)
    assert r.status_code == 200 and r.get_json()["tokens_revoked"] == 1
    assert client.get("/api/v1/nodes", headers=bearer(sams)).status_code == 401
    assert auth.check_password(db, "sam", "a long password") is None  # cannot log in
    assert client.post("/api/v1/users/sam/enable", headers=admin).status_code == 200
    assert auth.check_password(db, "sam", "a long password") is not None
    r = client.post("/api/v1/users/sam/rename", headers=admin, json={"name": "samantha"})
    assert r.status_code == 200 and r.get_json()["user"] == "samantha"
    assert user_store.get_user(db, "sam") is None
    one_time = client.post("/api/v1/users/samantha/reset", headers=admin).get_json()[
        "one_time_password"]
    assert auth.check_password(db, "samantha", one_time) is not None
    assert user_store.get_user(db, "samantha")["must_change_password"]
    actions = [e["action"] for e in audit_store.audit_log(db, actor="token:admin-script")]
    assert {"user.disable", "user.enable", "user.rename", "user.reset"} <= set(actions)


def test_the_users_api_says_what_was_wrong(client, db):
    admin = bearer(auth.create_token(db, "admin-script", "admin"))
    auth.create_user(db, "sam", "a long password", "viewer")
    auth.create_user(db, "kim", "a long password", "viewer")
    assert client.post("/api/v1/users/nobody/disable", headers=admin).status_code == 404
    assert client.post("/api/v1/users/sam/promote", headers=admin).status_code == 404
    r = client.post("/api/v1/users/sam/rename", headers=admin, json={"name": "kim"})
    assert r.status_code == 409 and "already exists" in r.get_json()["error"]
    r = client.post("/api/v1/users/sam/rename", headers=admin, json={"name": "no spaces"})
    assert r.status_code == 400 and "user name" in r.get_json()["error"]
    r = client.post("/api/v1/users/sam/rename", headers=admin, json={"nom": "x"})
    assert r.status_code == 400
    assert user_store.get_user(db, "sam") is not None  # nothing changed by the refusals
