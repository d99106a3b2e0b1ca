"""Fixtures for fleet tests: app, client, runner and a store, each on a fresh DATA_DIR."""

import re

import pytest
from click.testing import CliRunner

from fleet import create_app
from fleet.settings import Settings
from fleet.store.migrate import open_db
from fleet.web.auth import create_token, create_user


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh DATA_DIR for this test, also set in the environment for the CLI."""
    path = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(path))
    monkeypatch.delenv("MQTT_URL", raising=False)
    return path


@pytest.fixture
def settings(data_dir, database_url):
    # Port 1 refuses connections: a test that needs a broker passes the mosquitto fixture's port.
    # database_url: None on SQLite (DATA_DIR/fleet.db), a fresh database with --backend=postgresql.
    return Settings(data_dir=data_dir, port=8000, mqtt_port=1, mqtt_url=None,
                    database_url=database_url)


@pytest.fixture
def app(settings):
    return create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "test"})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(data_dir):
    return CliRunner()


@pytest.fixture
def db(settings):
    conn = open_db(settings.db_path)
    yield conn
    conn.conn.close()


@pytest.fixture
def token(db):
    return create_token(db, "tests", "operator")


@pytest.fixture
def auth_headers(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user(db):
    create_user(db, "alice", "correct horse", "admin")
    return ("alice", "correct horse")


def read_form_token(client, url: str) -> str:
    """The CSRF token from the form on the page at url."""
    page = client.get(url).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


@pytest.fixture
def form_token():
    """read_form_token(client, url): the CSRF token of the form on a page."""
    return read_form_token


@pytest.fixture
def logged_in(client, user):
    """The client with a session for alice, logged in through the real form."""
    token = read_form_token(client, "/auth/login")
    response = client.post("/auth/login", data={
        "username": user[0], "password": user[1], "csrf_token": token,
    })
    assert response.status_code == 302
    return client
