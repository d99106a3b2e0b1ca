"""A provider's stored password goes only where it was given for (#19): changing the host, the
port or TLS without giving the password again is refused, on every surface, and nothing is lost."""

import pytest

from fleet.cli import cli
from fleet.providers import ProviderError, registry
from fleet.web.auth import create_token

CFG = {"name": "ttn", "kind": "tts", "host": "eu1.cloud.thethings.network", "tls": True,
       "application": "city-sensors", "username": "city-sensors@ttn"}


@pytest.mark.parametrize("change", [{"host": "listener.evil.example"}, {"port": 1883},
                                    {"tls": False, "port": 8883}])
def test_moving_the_secret_needs_it_again(db, settings, change):
    registry.add(db, settings.data_dir, CFG, "NNSXS.SECRET", actor="alice")
    with pytest.raises(ProviderError, match="password"):
        registry.add(db, settings.data_dir, dict(CFG, **change), None, actor="mallory")
    # Nothing changed: the old destination and its password stay.
    assert registry.login(db, settings.data_dir, "ttn") == (
        registry.get(db, "ttn"), "NNSXS.SECRET")
    assert registry.get(db, "ttn")["host"] == CFG["host"] and registry.get(db, "ttn")["tls"]
    # With the password given again the move is fine; so is an edit that keeps the destination.
    registry.add(db, settings.data_dir, dict(CFG, **change), "NEW.KEY", actor="alice")
    assert registry.login(db, settings.data_dir, "ttn")[1] == "NEW.KEY"
    registry.add(db, settings.data_dir, dict(CFG, **change, downlinks_per_day=3), None)
    assert registry.login(db, settings.data_dir, "ttn")[1] == "NEW.KEY"


def test_a_provider_without_a_password_may_move_freely(db, settings):
    registry.add(db, settings.data_dir, CFG, None)
    registry.add(db, settings.data_dir, dict(CFG, host="other.example"), None)
    assert registry.get(db, "ttn")["host"] == "other.example"


def test_api_names_the_missing_field(client, db, settings):
    headers = {"Authorization": "Bearer " + create_token(db, "admin-t", role="admin")}
    body = dict(CFG, password="NNSXS.SECRET")
    body.pop("name")
    assert client.put("/api/v1/providers/ttn", json=body, headers=headers).status_code == 200
    r = client.put("/api/v1/providers/ttn", json=dict(body, password=None, host="evil.example"),
                   headers=headers)
    assert r.status_code == 400 and '"password"' in r.json["error"], r.json
    assert registry.get(db, "ttn")["host"] == CFG["host"]


def test_ui_names_the_missing_field(client, user, form_token, db, settings):
    registry.add(db, settings.data_dir, CFG, "NNSXS.SECRET")
    client.post("/auth/login", data={"username": user[0], "password": user[1],
                                     "csrf_token": form_token(client, "/auth/login")})
    data = dict(CFG, tls="on", port="8883", host="evil.example", tenant="", password="",
                downlinks_per_day="", csrf_token=form_token(client, "/providers/"))
    page = client.post("/providers/", data=data, follow_redirects=True).get_data(as_text=True)
    assert "Not saved" in page and "fill in the Password field" in page
    assert registry.get(db, "ttn")["host"] == CFG["host"]


def test_cli_names_the_missing_option(runner, db, settings):
    registry.add(db, settings.data_dir, CFG, "NNSXS.SECRET")
    r = runner.invoke(cli, ["provider", "add", "ttn", "--kind", "tts", "--host", "evil.example",
                            "--tls", "--application", "city-sensors"], input="\n")
    assert r.exit_code == 1 and "--password-stdin" in r.output and "Traceback" not in r.output
    assert registry.get(db, "ttn")["host"] == CFG["host"]
    assert registry.login(db, settings.data_dir, "ttn")[1] == "NNSXS.SECRET"


def test_cli_no_password_clears_the_stored_one_instead_of_moving_it(runner, db, settings):
    registry.add(db, settings.data_dir, CFG, "NNSXS.SECRET")
    r = runner.invoke(cli, ["provider", "add", "ttn", "--kind", "tts", "--host", "lab.example",
                            "--application", "city-sensors", "--no-password"])
    assert r.exit_code == 0 and "password none" in r.output, r.output
    assert registry.login(db, settings.data_dir, "ttn")[1] is None
