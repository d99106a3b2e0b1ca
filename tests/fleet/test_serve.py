"""`fleet run` as a user starts it: ports, first-run login, supervision, clean stop."""

import os
import re
import signal
import socket
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest
from services import READY, FleetRun, fleet_db, free_port

from fleet import serve
from fleet.broker.server import mqtt_ready, port_is_free
from fleet.settings import Settings, from_env
from fleet.store.base import connect


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def log_in(login_url: str, name: str, password: str) -> int:
    """Log in through the form as a browser would (cookie + CSRF token); the final status."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(login_url, timeout=10) as response:
        form = response.read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode(
        {"csrf_token": token, "username": name, "password": password}).encode()
    try:
        with opener.open(login_url, data=data, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_first_run_prints_the_url_and_a_one_time_password_and_stops_cleanly(fleet_run):
    run = fleet_run()
    url_line = run.wait_for("web UI and API")
    assert f"http://127.0.0.1:{run.port}" in url_line
    password_line = run.wait_for("with password:")
    password = password_line.rsplit(":", 1)[1].strip()
    assert len(password) >= 12
    login_url = re.search(r"Log in at (\S+)\.", run.wait_for("Log in at")).group(1)
    assert login_url.startswith(f"http://127.0.0.1:{run.port}/")
    run.wait_for(READY)

    status, body = get(login_url)
    assert status == 200
    assert "password" in body.lower()
    assert mqtt_ready("127.0.0.1", run.mqtt_port), "the broker `fleet run` started is not serving"
    assert log_in(login_url, "admin", password) == 200, "the printed password does not log in"
    assert log_in(login_url, "admin", password + "x") == 401

    assert run.stop() == 0
    assert "stopped" in run.output()
    assert port_is_free(run.port) and port_is_free(run.mqtt_port), "a child outlived `fleet run`"


def test_ctrl_c_stops_everything_even_when_started_with_sigint_ignored(tmp_path):
    # A shell without job control starts background jobs with SIGINT ignored; Ctrl-C (or
    # kill -INT) must still stop the fleet and its children.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = FleetRun(tmp_path / "data", free_port(), free_port())
    finally:
        signal.signal(signal.SIGINT, previous)
    run.wait_for(READY)
    assert run.stop(sig=signal.SIGINT) == 0
    assert "stopped" in run.output()
    assert port_is_free(run.port) and port_is_free(run.mqtt_port)


def test_password_is_stored_hashed_and_not_shown_again(fleet_run, tmp_path):
    first = fleet_run()
    password = first.wait_for("with password:").rsplit(":", 1)[1].strip()
    first.wait_for(READY)
    assert first.stop() == 0

    target = fleet_db(tmp_path / "data")
    if isinstance(target, str):  # PostgreSQL: every row of every table, as text
        db = connect(target)
        stored = "".join(str(row) for table in db.table_names()
                         for row in db.conn.execute(f"SELECT * FROM {table}")).encode()
        db.conn.close()
    else:
        stored = target.read_bytes()
    assert password.encode() not in stored, "the admin password is stored in clear"

    second = FleetRun(tmp_path / "data", first.port, first.mqtt_port)
    try:
        second.wait_for(READY)
        assert "password:" not in second.output()
    finally:
        assert second.stop() == 0


def test_mqtt_port_taken_says_how_to_choose_another_or_use_that_broker(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        run = FleetRun(tmp_path / "data", free_port(), taken)
        code = run.proc.wait(30)
    out = run.output()
    assert code != 0
    assert f"port {taken} is already in use (a system mosquitto?)" in out
    assert "MQTT_PORT=" in out and f"MQTT_URL=mqtt://127.0.0.1:{taken}" in out
    assert "Traceback" not in out


def test_web_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        run = FleetRun(tmp_path / "data", taken, free_port())
        code = run.proc.wait(30)
    out = run.output()
    assert code != 0
    assert f"port {taken} is already in use" in out and "PORT=" in out
    assert "Traceback" not in out


def test_mqtt_url_uses_that_broker_and_starts_none(fleet_run, mosquitto):
    run = fleet_run(mqtt_url=mosquitto.url)
    line = run.wait_for("broker")
    assert f"mqtt://127.0.0.1:{mosquitto.port}" in line and "external" in line
    run.wait_for(READY)
    assert port_is_free(run.mqtt_port), "`fleet run` started a broker although MQTT_URL was set"
    assert run.stop() == 0


def test_a_dead_ingest_worker_is_restarted(fleet_run):
    run = fleet_run()
    pid = int(re.search(r"ingest worker\s+pid (\d+)", run.wait_for("ingest worker")).group(1))
    run.wait_for(READY)
    os.kill(pid, signal.SIGKILL)
    run.wait_for("ingest worker exited", timeout=10)
    line = run.wait_for("ingest worker restarted", timeout=10)
    new_pid = int(re.search(r"pid (\d+)", line).group(1))
    assert new_pid != pid
    os.kill(new_pid, 0)  # raises if the new worker is not running
    assert run.stop() == 0


def _squat():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_without_mqtt_port_a_taken_default_moves_the_broker_to_a_free_port(tmp_path, capsys):
    # As on a machine whose system mosquitto holds 1883: `make run` must still start.
    settings = Settings(tmp_path, free_port(), 1883, None, mqtt_port_chosen=False)
    with _squat() as a, _squat() as b:
        default, also_taken = a.getsockname()[1], b.getsockname()[1]
        free = free_port()
        chosen = serve.choose_mqtt_port(settings, default, [also_taken, free])
        assert chosen.mqtt_port == free
        assert f"port {default} is taken" in capsys.readouterr().out
        with pytest.raises(serve.ServeError, match=f"port {default} is already in use"):
            serve.choose_mqtt_port(settings, default, [also_taken])
    assert serve.choose_mqtt_port(settings, free).mqtt_port == free  # the default when free


def test_a_given_mqtt_port_is_kept_even_when_taken(tmp_path):
    with _squat() as a:
        taken = a.getsockname()[1]
        settings = Settings(tmp_path, free_port(), taken, None, mqtt_port_chosen=True)
        assert serve.choose_mqtt_port(settings, taken, [free_port()]) is settings
        with pytest.raises(serve.ServeError, match="MQTT_PORT="):
            serve.check_ports(settings)


def test_the_cli_and_sim_find_the_port_fleet_run_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MQTT_PORT", raising=False)
    monkeypatch.delenv("MQTT_URL", raising=False)
    assert from_env().mqtt_port == 1883  # nothing recorded yet
    serve.record_mqtt_port(Settings(tmp_path, 8000, 1890, None))
    assert from_env().mqtt_port == 1890 and not from_env().mqtt_port_chosen
    monkeypatch.setenv("MQTT_PORT", "1999")
    assert from_env().mqtt_port == 1999  # the environment wins
    monkeypatch.delenv("MQTT_PORT")
    (tmp_path / "broker" / "port").write_text("not a port\n")
    assert from_env().mqtt_port == 1883  # a damaged record is ignored, not fatal
