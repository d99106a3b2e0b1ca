"""The web tier as several processes: one user's requests land on different web processes, and a
change written through one of them, or by the ingest, reaches a live stream held by the other.

On PostgreSQL the stream is woken by LISTEN/NOTIFY (fleet/store/live.py); LIVE_IDLE is set far
beyond the test's wait, so only a notice can bring the change in time. On SQLite both processes
poll the same file.
"""

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from polylink import proto
from test_ingest_mqtt import frame, wait_for

from fleet.ingest import Ingest
from fleet.store.migrate import open_db
from fleet.web.auth import create_user

ROOT = Path(__file__).resolve().parents[3]
IDLE = 60  # s a stream waits for a notice before it reads the node anyway
WAIT = 8  # s the test gives a change to arrive: well under IDLE

# A web process as an operator runs one behind a load balancer: waitress serving create_app().
# It binds port 0 itself and prints the port it got: a port chosen by the test and bound a few
# seconds later, after the imports, could be taken meanwhile by any client's outgoing connection.
SERVE = f"""
from waitress.server import create_server
from fleet import create_app
app = create_app({{"LIVE_IDLE": {IDLE}, "LIVE_SECONDS": 120}})
server = create_server(app, host="127.0.0.1", port=0, threads=8)
print("serving on", server.effective_port, flush=True)
server.run()
"""


@pytest.fixture
def web_processes(settings, mosquitto, tmp_path):
    env = dict(os.environ, DATA_DIR=str(settings.data_dir), MQTT_PORT=str(mosquitto.port))
    env.pop("MQTT_URL", None)
    procs = []
    try:
        for i in range(2):
            log_path = tmp_path / f"web-{i}.log"
            log = open(log_path, "wb")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen([sys.executable, "-c", SERVE], env=env, cwd=ROOT,
                                           stdout=log, stderr=subprocess.STDOUT), log, log_path))
        yield [serving_url(proc, log_path) for proc, _, log_path in procs]
    finally:
        for proc, log, _ in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def serving_url(proc, log_path, timeout=60) -> str:
    """The URL of a started web process once it answers its login page; fails with its log."""
    def log_text():
        return log_path.read_text(errors="replace")

    def answering():
        if proc.poll() is not None:
            raise AssertionError(f"the web process exited ({proc.returncode}):\n{log_text()}")
        found = re.search(r"serving on (\d+)", log_text())
        if not found:
            return None
        url = f"http://127.0.0.1:{found.group(1)}"
        try:
            return url if requests.get(url + "/auth/login", timeout=2).status_code == 200 else None
        except requests.ConnectionError:
            return None
    try:
        return wait_for(answering, timeout=timeout, what="a web process to answer")
    except AssertionError as e:
        if "exited" in str(e):
            raise
        raise AssertionError(f"{e}; its log:\n{log_text()}") from None


def login(session, url, name, password):
    page = session.get(url + "/auth/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = session.post(url + "/auth/login", data={"username": name, "password": password,
                                                "csrf_token": token},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text


class Stream:
    """An SSE client in a thread: the `state` events of one node's live stream, in order."""

    def __init__(self, session, url):
        self.events: queue.Queue = queue.Queue()
        self.response = session.get(url, stream=True, timeout=30)
        assert self.response.status_code == 200
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    self.events.put(json.loads(line[len("data: "):]))
        except (requests.RequestException, AttributeError):
            pass  # closed by the test

    def next_matching(self, predicate, timeout):
        """The first state within timeout s that predicate accepts; AssertionError if none."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                state = self.events.get(timeout=left)
            except queue.Empty:
                break
            if predicate(state):
                return state
        raise AssertionError(f"no matching live state within {timeout} s")

    def close(self):
        self.response.close()


def test_a_change_through_one_web_process_or_the_ingest_reaches_a_stream_on_the_other(
        settings, web_processes):
    first, second = web_processes
    db = open_db(settings.db_path)
    try:
        create_user(db, "olga", "long enough pass", "operator")
        ingest = Ingest(db)  # another process's writes, as far as the web processes can tell
        ingest.add("pl/v1/n1/up", frame(1, [(0, 0, 20.5)]), time.time())
        ingest.flush()

        session = requests.Session()
        login(session, first, "olga", "long enough pass")  # the cookie works on either process
        stream = Stream(session, second + "/nodes/n1/live")
        try:
            state = stream.next_matching(lambda s: True, WAIT)
            assert state["values"]["q0-0"] == "20.5 °C" and state["commands"] == {}

            # Through the ingest (a worker on any machine): a new value.
            ingest.add("pl/v1/n1/up", frame(2, [(0, 0, 23.0)]), time.time())
            ingest.flush()
            state = stream.next_matching(lambda s: s["values"]["q0-0"] == "23.0 °C", WAIT)

            # Through the other web process: a command sent from the node page's form.
            page = session.get(first + "/nodes/n1", timeout=10).text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            r = session.post(first + "/nodes/n1/commands",
                             data={"command": "identify", "csrf_token": token},
                             allow_redirects=False, timeout=30)
            assert r.status_code == 303
            state = stream.next_matching(lambda s: len(s["commands"]) == 1, WAIT)
            assert state["values"]["q0-0"] == "23.0 °C"

            # And its RESULT, which comes back through the ingest.
            (cid,) = state["commands"]
            ingest.add("pl/v1/n1/up", frame_result(3, int(cid)), time.time())
            ingest.flush()
            stream.next_matching(lambda s: s["commands"][cid] == "ok", WAIT)
        finally:
            stream.close()
    finally:
        db.conn.close()


def frame_result(seq, cid) -> bytes:
    buf = bytearray(64)
    n = proto.encode(buf, proto.RESULT, seq, {"cid": cid, "code": 0})
    return bytes(buf[:n])
