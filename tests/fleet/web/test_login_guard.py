"""Login hardening (#19): redirects stay on this site; guessing cannot lock a user out."""

import pytest

from fleet.store import alerts as alert_store
from fleet.web import auth


@pytest.mark.parametrize("target", [
    "/%09/evil.example", "/\t/evil.example", "//evil.example", "/\\evil.example",
    "\\\\evil.example", "https://evil.example/", "javascript:alert(1)", "/x\r\nSet-Cookie: a=b",
    "/\n/evil.example", "evil.example", "",
])
def test_local_target_refuses_anything_but_a_path_here(target):
    from urllib.parse import unquote
    assert auth.local_target(unquote(target), "/home") == "/home"


def test_local_target_keeps_a_local_path_and_query():
    assert auth.local_target("/nodes/n01?tab=alerts", "/home") == "/nodes/n01?tab=alerts"


@pytest.mark.parametrize("target", ["/%09/evil.example", "/%0d%0a/evil.example",
                                    "/%5C/evil.example", "//evil.example"])
def test_login_never_redirects_off_site(client, user, form_token, target):
    r = client.post(f"/auth/login?next={target}", data={
        "username": "alice", "password": "correct horse",
        "csrf_token": form_token(client, "/auth/login")})
    assert r.status_code == 302
    assert r.headers["Location"] == "/nodes/"


def test_login_keeps_a_local_next(client, user, form_token):
    r = client.post("/auth/login?next=/alerts/", data={
        "username": "alice", "password": "correct horse",
        "csrf_token": form_token(client, "/auth/login")})
    assert r.headers["Location"] == "/alerts/"


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\r\n/evil.example", "//evil.example"])
def test_alert_acknowledge_never_redirects_off_site(logged_in, db, form_token, target):
    assert alert_store.open_alert(db, "n01", "update_failed", "hash mismatch")
    (alert,) = alert_store.list_alerts(db)
    alert_id = alert["id"]
    r = logged_in.post(f"/alerts/{alert_id}/ack", data={
        "next": target, "csrf_token": form_token(logged_in, "/alerts/")})
    assert r.status_code == 303
    assert r.headers["Location"] == "/alerts/"


def _login(client, form_token, password, addr):
    return client.post("/auth/login", data={
        "username": "alice", "password": password,
        "csrf_token": form_token(client, "/auth/login")}, environ_base={"REMOTE_ADDR": addr})


def test_guessing_from_one_address_does_not_lock_the_user_out_elsewhere(app, user, form_token):
    attacker = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert _login(attacker, form_token, "guess", "203.0.113.9").status_code == 401
    assert _login(attacker, form_token, "correct horse", "203.0.113.9").status_code == 429
    assert _login(app.test_client(), form_token, "correct horse", "198.51.100.7").status_code == 302


def test_one_address_trying_many_names_is_limited(app, user, form_token):
    client = app.test_client()
    for i in range(app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"]):
        r = client.post("/auth/login", data={
            "username": f"user{i}", "password": "guess",
            "csrf_token": form_token(client, "/auth/login")},
            environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert r.status_code == 401
    assert _login(client, form_token, "correct horse", "203.0.113.9").status_code == 429
