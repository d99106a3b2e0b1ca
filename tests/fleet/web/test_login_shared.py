"""The login limit is the store's, shared by every web process (issue 15).

Two Flask apps on one store stand for two web processes behind a load balancer: failures on
either count against the same limit, on both backends.
"""

import logging
import re
import threading

import pytest

from fleet import create_app
from fleet.store import users as user_store
from fleet.upkeep import Upkeep

ADDR = "203.0.113.9"


@pytest.fixture
def two_apps(settings, user):
    """Two web 'processes' on the same store, with the same secret key (as deployed)."""
    return [create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "shared"})
            for _ in range(2)]


def login(app, password, name="alice", addr=ADDR):
    client = app.test_client()
    page = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/auth/login", data={"username": name, "password": password,
                                            "csrf_token": token},
                       environ_base={"REMOTE_ADDR": addr})


def test_failures_on_two_processes_share_one_limit(two_apps):
    limit = two_apps[0].config["LOGIN_MAX_FAILURES"]
    for i in range(limit):  # alternating: each process alone has seen only half of them
        assert login(two_apps[i % 2], "guess").status_code == 401
    for app in two_apps:
        r = login(app, "correct horse")
        assert r.status_code == 429
        assert b"Too many failed logins from this address; try again in 5 minutes" in r.data
        assert 0 < int(r.headers["Retry-After"]) <= 300
    # Another address is not locked out by these guesses, on either process.
    assert login(two_apps[1], "correct horse", addr="198.51.100.7").status_code == 302


def test_the_address_limit_across_names_is_shared_too(two_apps):
    limit = two_apps[0].config["LOGIN_MAX_FAILURES_PER_ADDRESS"]
    for i in range(limit):
        assert login(two_apps[i % 2], "guess", name=f"user{i}").status_code == 401
    assert login(two_apps[0], "correct horse").status_code == 429
    assert login(two_apps[1], "correct horse").status_code == 429


def test_a_success_on_one_process_resets_the_count_on_the_other(two_apps):
    limit = two_apps[0].config["LOGIN_MAX_FAILURES"]
    for _ in range(limit - 1):
        assert login(two_apps[0], "guess").status_code == 401
    assert login(two_apps[1], "correct horse").status_code == 302
    for _ in range(limit):  # a fresh count for the name: the full limit again
        assert login(two_apps[0], "guess").status_code == 401
    assert login(two_apps[1], "correct horse").status_code == 429


def test_concurrent_guesses_on_two_processes_get_no_more_than_the_limit(two_apps):
    # The attempt is counted before the slow password check, in one transaction: guesses sent
    # at once to both processes cannot all pass the check before any is counted.
    limit = two_apps[0].config["LOGIN_MAX_FAILURES"]
    codes, start = [], threading.Barrier(3 * limit)

    def guess(app):
        start.wait()
        codes.append(login(app, "guess").status_code)

    threads = [threading.Thread(target=guess, args=(two_apps[i % 2],)) for i in range(3 * limit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [401] * limit + [429] * (2 * limit)


def test_nothing_typed_is_stored_or_logged(two_apps, db, caplog):
    caplog.set_level(logging.DEBUG)
    secret, misplaced = "Tr0ub4dor&3-the-password", "correct-horse-in-the-name-field"
    assert login(two_apps[0], secret).status_code == 401
    assert login(two_apps[1], "guess", name=misplaced).status_code == 401
    rows = list(db.query("SELECT * FROM login_attempts"))
    assert len(rows) == 3  # the address, and the address with each of the two names
    stored = repr(rows)
    for typed in (secret, misplaced, "alice", ADDR):
        assert typed not in stored
        assert typed not in caplog.text
    assert {r["subject"].split(":")[0] for r in rows} == {"addr", "addr-user"}


def test_a_window_ends_and_upkeep_forgets_it(settings, db):
    limits = {"addr:x": 2}
    assert user_store.take_login_attempt(db, limits, 300, now=1000.0) is None
    assert user_store.take_login_attempt(db, limits, 300, now=1100.0) is None
    assert user_store.take_login_attempt(db, limits, 300, now=1200.0) == 100.0  # refused
    assert user_store.take_login_attempt(db, limits, 300, now=1299.0) == 1.0  # still; not counted
    assert user_store.take_login_attempt(db, limits, 300, now=1300.0) is None  # a new window
    assert list(db.query("SELECT since, until, attempts FROM login_attempts")) == [
        {"since": 1300.0, "until": 1600.0, "attempts": 1}]
    assert Upkeep(settings).round(db, now=1599.0).get("login_attempts") is None
    assert Upkeep(settings).round(db, now=1600.0)["login_attempts"] == 1
    assert list(db.query("SELECT * FROM login_attempts")) == []
