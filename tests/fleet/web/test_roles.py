"""Roles: every view and API endpoint allows exactly the roles of its area; changes are audited."""

import pytest
from werkzeug.routing import IntegerConverter

from fleet import cli
from fleet.store import audit as audit_store
from fleet.store import commands as command_store
from fleet.store import migrate
from fleet.store import nodes as node_store
from fleet.store import users as user_store
from fleet.store.base import connect
from fleet.web import auth

PASSWORD = "correct horse"


def login(client, form_token, name):
    r = client.post("/auth/login", data={"username": name, "password": PASSWORD,
                                         "csrf_token": form_token(client, "/auth/login")})
    assert r.status_code == 302, r.data
    return client


@pytest.fixture
def as_role(app, db, form_token):
    """as_role(role): a test client logged in as a user with that role."""

    def make(role):
        name = f"{role}-user"
        if user_store.get_user(db, name) is None:
            auth.create_user(db, name, PASSWORD, role)
        return login(app.test_client(), form_token, name)

    return make


def test_cli_knows_the_same_roles():
    assert cli.ROLES == auth.ROLES


def test_every_view_is_guarded(app):
    """Each UI/API view declares its area, so a new view cannot forget to check a role."""
    open_views = {"static", "auth.login", "auth.logout", "index"}
    for name, view in app.view_functions.items():
        if name in open_views:
            continue
        assert getattr(view, "polylink_area", None) in auth.AREAS, f"{name} has no role check"


@pytest.mark.parametrize("role", auth.ROLES)
def test_audit_page_is_admin_only(as_role, role):
    client = as_role(role)
    r = client.get("/admin/audit")
    if role == "admin":
        assert r.status_code == 200 and "Audit log" in r.get_data(as_text=True)
    else:
        assert r.status_code == 403 and "Not allowed" in r.get_data(as_text=True)
    r = client.get("/admin/users")
    assert r.status_code == (200 if role == "admin" else 403)


@pytest.mark.parametrize("role", auth.ROLES)
def test_commands_need_the_nodes_area(as_role, role, db, form_token):
    node_store.enrol_node(db, "n1")
    client = as_role(role)
    assert client.get("/nodes/n1").status_code == 200  # everybody reads
    token = form_token(client, "/nodes/n1")
    r = client.post("/nodes/n1/commands", data={"command": "identify", "csrf_token": token})
    if role == "viewer":
        assert r.status_code == 403
        assert command_store.list_commands(db, "n1") == []
    else:
        assert r.status_code == 303
        assert [c["created_by"] for c in command_store.list_commands(db, "n1")] == [f"{role}-user"]


def test_admin_adds_a_user_and_changes_a_role_audited(as_role, db, form_token):
    client = as_role("admin")
    token = form_token(client, "/admin/users")
    r = client.post("/admin/users", data={"action": "add", "name": "tom", "password": "long-enough",
                                          "role": "technician", "csrf_token": token})
    assert r.status_code == 302
    assert user_store.get_user(db, "tom")["role"] == "technician"
    r = client.post("/admin/users", data={"action": "role", "name": "tom", "role": "wizard",
                                          "csrf_token": token})
    assert r.status_code == 400 and "must be one of" in r.get_data(as_text=True)
    r = client.post("/admin/users", data={"action": "role", "name": "tom", "role": "viewer",
                                          "csrf_token": token})
    assert user_store.get_user(db, "tom")["role"] == "viewer"
    page = client.get("/admin/audit?target=tom").get_data(as_text=True)
    assert "user.add" in page and "user.role" in page and "admin-user" in page
    # Without the CSRF token nothing changes.
    r = client.post("/admin/users", data={"action": "role", "name": "tom", "role": "admin"})
    assert r.status_code == 400 and user_store.get_user(db, "tom")["role"] == "viewer"


def test_non_admin_cannot_add_users(as_role, db, form_token):
    client = as_role("operator")
    token = form_token(client, "/nodes/")
    r = client.post("/admin/users", data={"action": "add", "name": "eve", "password": "long-enough",
                                          "role": "admin", "csrf_token": token})
    assert r.status_code == 403 and user_store.get_user(db, "eve") is None


def test_login_logout_and_commands_are_audited(as_role, db, form_token):
    node_store.enrol_node(db, "n1")
    client = as_role("technician")
    client.post("/nodes/n1/commands", data={"command": "identify",
                                            "csrf_token": form_token(client, "/nodes/n1")})
    client.post("/auth/logout", data={"csrf_token": form_token(client, "/nodes/")})
    actions = [(r["actor"], r["action"])
               for r in audit_store.audit_log(db, actor="technician-user")]
    assert actions == [("technician-user", "logout"), ("technician-user", "command"),
                       ("technician-user", "login")]


def test_admin_link_shown_only_to_admins(as_role):
    assert "/admin/audit" in as_role("admin").get("/nodes/").get_data(as_text=True)
    assert "/admin/audit" not in as_role("technician").get("/nodes/").get_data(as_text=True)


# --- API tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", auth.ROLES)
def test_api_token_roles(client, db, role):
    node_store.enrol_node(db, "n1")
    headers = {"Authorization": "Bearer " + auth.create_token(db, f"t-{role}", role)}
    assert client.get("/api/v1/nodes", headers=headers).status_code == 200
    r = client.post("/api/v1/nodes/n1/commands", json={"command": "identify"}, headers=headers)
    if role == "viewer":
        assert r.status_code == 403 and "may not" in r.get_json()["error"]
    else:
        # Allowed; the test settings point at a closed broker port.
        assert r.status_code == 503
    entries = audit_store.audit_log(db, target="n1")
    assert [e["actor"] for e in entries] == ([] if role == "viewer" else [f"token:t-{role}"])


def test_session_cookie_grants_nothing_on_the_api(as_role):
    assert as_role("admin").get("/api/v1/nodes").status_code == 401


def test_tokens_made_before_roles_keep_operator_powers(tmp_path):
    db = connect(tmp_path / "old.db")
    migrate.migrate(db, 3)
    db.conn.execute("INSERT INTO api_tokens (name, token_hash, created) VALUES ('old', ?, 0)",
                    (user_store.hash_token("plt_x"),))
    migrate.migrate(db)
    assert user_store.token_info(db, "plt_x") == {"name": "old", "role": "operator"}


def test_cli_token_and_user_roles(runner, db):
    r = runner.invoke(cli.cli, ["token", "create", "grafana", "--role", "viewer"])
    assert r.exit_code == 0, r.output
    assert user_store.token_info(db, r.stdout.strip())["role"] == "viewer"
    r = runner.invoke(cli.cli, ["user", "add", "tina", "--role", "technician", "--password-stdin"],
                      input="a-good-pass\n")
    assert r.exit_code == 0 and user_store.get_user(db, "tina")["role"] == "technician"
    r = runner.invoke(cli.cli, ["user", "set-role", "tina", "viewer"])
    assert r.exit_code == 0 and user_store.get_user(db, "tina")["role"] == "viewer"
    r = runner.invoke(cli.cli, ["user", "set-role", "nobody", "viewer"])
    assert r.exit_code == 1 and "unknown user 'nobody'" in r.output
    r = runner.invoke(cli.cli, ["user", "list"])
    assert "tina" in r.output and "viewer" in r.output
    r = runner.invoke(cli.cli, ["user", "add", "x", "--role", "wizard"])
    assert r.exit_code == 2 and "wizard" in r.output


def test_every_form_post_needs_a_csrf_token(app, as_role, db):
    """Every POST outside the token-authenticated API is refused without the form's token."""
    node_store.enrol_node(db, "n1")
    client = as_role("admin")
    posts = []
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.rule.startswith("/api/"):
            continue
        values = {}
        for arg, conv in rule._converters.items():
            if hasattr(conv, "items"):  # any(...): the first choice
                values[arg] = sorted(conv.items)[0]
            else:
                values[arg] = 1 if isinstance(conv, IntegerConverter) else "n1"
        path = app.url_map.bind("localhost").build(rule.endpoint, values, method="POST")
        posts.append(path)
    assert "/nodes/bulk" in posts and "/admin/users" in posts
    before = audit_store.audit_log(db, limit=1000)
    for path in posts:
        r = client.post(path, data={"command": "identify", "name": "x", "tag": "x"})
        assert r.status_code == 400 and b"CSRF" in r.data, path
    assert audit_store.audit_log(db, limit=1000) == before  # nothing changed


def test_the_provisioning_page_is_not_for_viewers_and_the_docs_say_so(app, db, form_token):
    """It mints and shows node credentials and claim tokens: least privilege keeps viewers out."""
    from pathlib import Path
    auth.create_user(db, "vic", "long enough pw", "viewer")
    client = app.test_client()
    client.post("/auth/login", data={"username": "vic", "password": "long enough pw",
                                     "csrf_token": form_token(client, "/auth/login")})
    assert client.get("/nodes/").status_code == 200
    assert client.get("/provision/").status_code == 403
    assert "Provisioning" not in client.get("/nodes/").get_data(as_text=True)
    docs = (Path(__file__).resolve().parents[3] / "docs" / "fleet.md").read_text()
    assert "except the admin area and the provisioning page" in docs
    assert "every page, `GET" not in docs


def test_library_defaults_are_the_least_privilege(db):
    auth.create_user(db, "nobody-special", "long enough pw")
    assert user_store.get_user(db, "nobody-special")["role"] == "viewer"
    assert user_store.token_info(db, auth.create_token(db, "script"))["role"] == "viewer"


@pytest.mark.parametrize("role", auth.ROLES)
def test_taking_access_back_is_admin_only(as_role, role, db, form_token, client):
    """The routes of #19 (users, tokens) refuse every role but admin, in the UI and the API."""
    auth.create_user(db, "target", PASSWORD, "viewer")
    auth.create_token(db, "target-token", "viewer")
    ui = as_role(role)
    token = form_token(ui, "/nodes/")
    expected = 302 if role == "admin" else 403
    r = ui.post("/admin/users/manage", data={"name": "target", "action": "disable",
                                             "csrf_token": token})
    assert r.status_code == expected
    r = ui.post("/admin/tokens/revoke", data={"name": "target-token", "csrf_token": token})
    assert r.status_code == expected
    headers = {"Authorization": "Bearer " + auth.create_token(db, f"t-{role}", role)}
    assert client.get("/api/v1/tokens", headers=headers).status_code == (
        200 if role == "admin" else 403)
    assert client.get("/api/v1/users", headers=headers).status_code == (
        200 if role == "admin" else 403)
    assert client.post("/api/v1/users/target/disable", headers=headers).status_code == (
        200 if role == "admin" else 403)
    assert client.post(f"/api/v1/tokens/t-{role}/revoke", headers=headers).status_code == (
        200 if role == "admin" else 403)
    assert ui.get("/account/password").status_code == 200  # everybody changes their own
