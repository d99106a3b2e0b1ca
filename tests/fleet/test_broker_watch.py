"""`fleet run` restarts its broker when it dies, and says so on the terminal and on every page."""

import os
import signal
import time

from fleet.broker import server
from fleet.broker import status as broker_status


def test_fleet_run_restarts_a_killed_broker(fleet_run, tmp_path):
    run = fleet_run()
    run.wait_for("Press Ctrl-C to stop.", timeout=60)
    broker_dir = tmp_path / "data" / "broker"
    first = int((broker_dir / "broker.pid").read_text())
    assert broker_status.read(broker_dir)["state"] == "up"
    os.kill(first, signal.SIGKILL)
    line = run.wait_for("broker (mosquitto) exited", timeout=10)
    assert "code -9" in line and "restarting in" in line
    run.wait_for("broker restarted", timeout=30)
    second = int((broker_dir / "broker.pid").read_text())
    assert second != first
    assert server.mqtt_ready("127.0.0.1", run.mqtt_port)
    state = broker_status.read(broker_dir)
    assert state["state"] == "up" and state["restarts"] == 1
    # Killed again soon after: restarted again, after a longer wait.
    os.kill(second, signal.SIGKILL)
    line = run.wait_for("broker (mosquitto) exited", timeout=10)
    assert "restarting in 4 s" in line
    assert broker_status.read(broker_dir)["state"] == "down"
    run.wait_for("broker restarted", timeout=30)
    assert run.stop() == 0
    assert broker_status.read(broker_dir) is None  # stopped on purpose: nothing to report


def test_every_page_says_when_the_broker_is_down(logged_in, settings):
    assert "broker stopped" not in logged_in.get("/nodes/").get_data(as_text=True)
    settings.broker_dir.mkdir(parents=True, exist_ok=True)
    broker_status.write(settings.broker_dir, "down", exit_code=-9, restarts=2,
                        retry_at=time.time() + 4)
    page = logged_in.get("/nodes/").get_data(as_text=True)
    assert "MQTT broker stopped (exit code -9)" in page and "restarts so far: 2" in page
    broker_status.write(settings.broker_dir, "up", pid=1, restarts=3)
    assert "broker stopped" not in logged_in.get("/").get_data(as_text=True)
