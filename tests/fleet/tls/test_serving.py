"""What `fleet tls init/use/renew` says about the running broker (fleet/tls/serving.py); the real
reload of a running mosquitto is tests/e2e/test_tls_renewal.py."""

import subprocess

import pytest

from fleet.broker import auth as broker_auth
from fleet.tls import serving


@pytest.fixture
def other_process():
    """A live process standing in for a broker that must not be signalled."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_no_broker_running_says_the_next_start_serves_it(tmp_path):
    cert = tmp_path / "tls" / "server.pem"
    assert "no broker is running" in serving.reload_broker(tmp_path / "broker", cert)
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / broker_auth.PID_FILE).write_text("999999999\n")  # long gone
    assert "no broker is running" in serving.reload_broker(tmp_path / "broker", cert)


def test_a_broker_started_without_tls_needs_a_restart_and_gets_no_signal(tmp_path,
                                                                        other_process):
    broker = tmp_path / "broker"
    broker.mkdir()
    (broker / broker_auth.PID_FILE).write_text(f"{other_process.pid}\n")
    (broker / serving.CONFIG_FILE).write_text("listener 1883 127.0.0.1\n")
    message = serving.reload_broker(broker, tmp_path / "tls" / "server.pem")
    assert "restart `fleet run`" in message
    assert other_process.poll() is None  # a SIGHUP would have ended `sleep`
    assert serving.serves_from(broker, tmp_path / "tls" / "server.pem") is False
    (broker / serving.CONFIG_FILE).write_text(
        f"listener 8883 0.0.0.0\ncertfile {tmp_path / 'tls' / 'server.pem'}\n")
    assert serving.serves_from(broker, tmp_path / "tls" / "server.pem") is True
