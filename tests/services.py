"""The real services tests start (mosquitto, `fleet run`) and the free ports they listen on."""

import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.broker.server import MosquittoBroker, find_mosquitto


def fleet_db(data_dir: Path) -> Path | str:
    """The store of a fleet on data_dir: DATABASE_URL (--backend=postgresql), else its file."""
    return os.environ.get("DATABASE_URL") or Path(data_dir) / "fleet.db"


def _ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections (Linux: ip_local_port_range)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Chosen at random below the ephemeral range where there is room: a server started with this
    port binds it seconds later (after its imports), and a port from the ephemeral range could be
    taken meanwhile by any process's outgoing connection (the likely cause of a CI run that timed
    out waiting for a web process). Below that range only another server's bind can take it."""
    ephemeral = _ephemeral_ports()
    if ephemeral.start > 20000:
        for _ in range(100):
            port = random.randrange(15000, ephemeral.start)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use: try another
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mosquitto(broker_dir: Path,
                    config: Callable[[int], str] | None = None) -> MosquittoBroker:
    """A started mosquitto on a free port with the project's config, or config(port) if given."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; `.ci/run` installs it (apt-get install mosquitto)")
    # Another process may grab the free port between our check and mosquitto's bind: try again.
    for attempt in range(5):
        port = free_port()
        broker = MosquittoBroker(port, broker_dir, config_text=config(port) if config else None)
        try:
            return broker.start()
        except Exception:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


READY = "Press Ctrl-C to stop."  # the last line `fleet run` prints once it serves


class FleetRun:
    """`fleet run` in a subprocess whose output is read line by line."""

    def __init__(self, data_dir: Path, port: int, mqtt_port: int, mqtt_url: str | None = None):
        env = dict(os.environ, DATA_DIR=str(data_dir), PORT=str(port), MQTT_PORT=str(mqtt_port))
        env.pop("MQTT_URL", None)
        if mqtt_url:
            env["MQTT_URL"] = mqtt_url
        self.port, self.mqtt_port = port, mqtt_port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "run"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first output line containing text; fail with all output so far if none comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        pytest.fail(f"`fleet run` never printed {text!r}; output:\n" + "\n".join(self.seen))

    def ingest_pid(self) -> int:
        """Pid of the current ingest worker, from the lines `fleet run` printed so far."""
        pids = re.findall(r"ingest worker (?:\s+|restarted \()pid (\d+)", self.output())
        assert pids, "`fleet run` printed no ingest worker pid:\n" + self.output()
        return int(pids[-1])

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "\n".join(self.seen)

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> int:
        """Stop it as a service manager (SIGTERM) or a Ctrl-C (SIGINT) would; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


class SensorThingsServer:
    """A real OGC SensorThings API 1.1 server (django-ogc-sensorthings on SQLite, see
    tests/sta_server/sta_server.py) in a process of its own on a free port.

    .url is the service root (http://127.0.0.1:PORT/sta/v1.1); .login is its HTTP Basic
    "user:password"; .stop() ends it, .start() starts it again on the same port and database.
    """

    def __init__(self, work_dir: Path, login: str = "city:sta-pass"):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.login = login
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/sta/v1.1"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "SensorThingsServer":
        script = Path(__file__).parent / "sta_server" / "sta_server.py"
        log = open(self.work_dir / "server.log", "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.port), str(self.work_dir / "sta.sqlite3"),
             self.login], stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        line = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and b"ready" not in line:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
        if b"ready" not in line:
            self.stop()
            pytest.fail("the SensorThings server did not start:\n"
                        + (self.work_dir / "server.log").read_text(errors="replace")[-3000:])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
