"""`python -m polylink_host.sim` as a user runs it: settings from the environment, Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

from _host_harness import Listener
from polylink import proto


def test_sim_runs_nodes_from_the_fleet_settings_and_stops_cleanly_on_ctrl_c(mosquitto, tmp_path):
    lst = Listener(mosquitto)
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), MQTT_URL=mosquitto.url)
    env.pop("MQTT_PORT", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polylink_host.sim",
            "--nodes",
            "3",
            "--interval",
            "1",
            "--prefix",
            "cli",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(lst.frames(f"cli-{i:04d}", proto.TELEMETRY) for i in range(3)):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        # Ctrl-C is a power cut for every node: the broker marks each one offline.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(lst.conn(f"cli-{i:04d}")[-1:] == [b"0"] for i in range(3)):
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        lst.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("sim: 3 nodes, 3 connected,"), out
    for i in range(3):
        root = tmp_path / "data" / "sim" / f"cli-{i:04d}"
        assert (root / "config.json").exists() and (root / "seq").exists()
        assert lst.frames(f"cli-{i:04d}", proto.TELEMETRY), f"cli-{i:04d} sent no telemetry"
        assert lst.conn(f"cli-{i:04d}") == [b"1", b"0"]


def _run_sim(tmp_path, mosquitto, prefix, extra_env):
    lst = Listener(mosquitto)
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), MQTT_URL=mosquitto.url, **extra_env)
    env.pop("MQTT_PORT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "polylink_host.sim", "--nodes", "2", "--interval", "1",
         "--prefix", prefix, "--runtime", "micropython"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(lst.frames(f"{prefix}-{i:04d}", proto.STATUS) for i in range(2)):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        lst.close()
    return proc, out, err, lst


def test_sim_runs_micropython_nodes_one_process_each(mosquitto, tmp_path):
    proc, out, err, lst = _run_sim(tmp_path, mosquitto, "mpcli", {})
    assert proc.returncode == 0, err
    assert "MicroPython nodes" in out and out.strip().splitlines()[-1].startswith(
        "sim (MicroPython): 2 nodes,"), out
    for i in range(2):
        st = lst.frames(f"mpcli-{i:04d}", proto.STATUS)
        assert st and st[0][3]["micropython"].startswith("1."), f"mpcli-{i:04d}: {st}"


def test_sim_without_the_micropython_port_says_so_and_runs_cpython_nodes(mosquitto, tmp_path):
    proc, out, err, lst = _run_sim(tmp_path, mosquitto, "nompy",
                                   {"MICROPYTHON": str(tmp_path / "no-such-micropython")})
    assert proc.returncode == 0, err
    assert "is not an executable file; running the nodes on CPython instead" in err
    assert out.strip().splitlines()[-1].startswith("sim: 2 nodes,"), out
    for i in range(2):
        assert lst.frames(f"nompy-{i:04d}", proto.STATUS), f"nompy-{i:04d} sent nothing"
