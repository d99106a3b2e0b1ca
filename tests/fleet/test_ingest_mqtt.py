"""The ingest worker as its own process against a real mosquitto: exactly once, across crashes."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from polylink import proto

from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import UnknownNode, connect

ROOT = Path(__file__).resolve().parents[2]
READING = [(0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71)]


def frame(seq, body=READING) -> bytes:
    buf = bytearray(64)
    n = proto.encode(buf, proto.TELEMETRY, seq & 0xFFFF, body)
    return bytes(buf[:n])


def publisher(broker, client_id="test-pub"):
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def publish_wait(client, topic, payload, retain=False):
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(10)
    assert info.is_published()


class IngestProcess:
    """`fleet ingest` in its own process, pointed at the test broker and DATA_DIR."""

    def __init__(self, broker, data_dir, log_name="ingest.log"):
        # DATABASE_URL (--backend=postgresql) passes through from os.environ.
        self.env = dict(os.environ, DATA_DIR=str(data_dir), MQTT_PORT=str(broker.port))
        self.env.pop("MQTT_URL", None)
        self.log_path = data_dir.parent / log_name
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = None

    def start(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "ingest", *args],
                                     env=self.env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        return self

    def wait_logged(self, text: bytes, timeout: float, what: str, count: int = 1):
        """Wait until the log holds text count times; fail at once, with the log, if it died."""
        def logged():
            if self.proc.poll() is not None:
                raise AssertionError(f"{what}: the worker exited ({self.proc.returncode}) "
                                     f"before logging {text!r}:\n{self.log_tail()}")
            return self.log_path.read_bytes().count(text) >= count
        try:
            wait_for(logged, timeout=timeout, what=what)
        except AssertionError as e:
            if "exited" in str(e):
                raise
            raise AssertionError(f"{e}; its log ends:\n{self.log_tail()}") from None

    def log_tail(self, lines=40) -> str:
        return b"\n".join(self.log_path.read_bytes().splitlines()[-lines:]).decode(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(15)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def ingest_proc(mosquitto, data_dir):
    proc = IngestProcess(mosquitto, data_dir)
    yield proc
    proc.stop(signal.SIGKILL)
    proc.log.close()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def node_known(db_path, node_id):
    def check():
        if isinstance(db_path, Path) and not db_path.exists():
            return False
        db = connect(db_path)
        try:
            return node_id in node_store.known_node_ids(db)
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            return False
        finally:
            db.conn.close()
    return check


def count_frames(db_path):
    db = connect(db_path)
    try:
        return telemetry_store.count_frames(db)
    finally:
        db.conn.close()


def started(ingest_proc, pub, settings, *args):
    """Start the worker and return once it is subscribed (it has seen a retained probe)."""
    publish_wait(pub, "pl/v1/probe/conn", b"1", retain=True)
    ingest_proc.start(*args)
    wait_for(node_known(settings.db_path, "probe"), what="the worker to subscribe")


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_published_frames_are_stored_exactly_once(mosquitto, ingest_proc, settings, version):
    pub = publisher(mosquitto)
    started(ingest_proc, pub, settings, "--mqtt-version", version)
    for i in range(300):
        pub.publish(f"pl/v1/node-{i % 3}/up", frame(i // 3), qos=1)
    # Retransmissions: the same frames again must not be stored twice.
    for i in range(30):
        pub.publish(f"pl/v1/node-{i % 3}/up", frame(i // 3), qos=1)
    publish_wait(pub, "pl/v1/node-0/up", b"\x00garbage")
    wait_for(lambda: count_frames(settings.db_path) >= 300, what="300 frames")
    time.sleep(0.3)
    db = connect(settings.db_path)
    for n in range(3):
        assert telemetry_store.frame_seqs(db, f"node-{n}") == list(range(100))
        assert telemetry_store.count_readings(db, f"node-{n}") == 300
    assert node_store.get_node(db, "node-0")["bad_frames"] == 1
    assert ingest_proc.stop() == 0  # SIGTERM: flushed and exited cleanly
    pub.loop_stop()


def test_ingest_crash_and_restart_mid_stream_lose_nothing(mosquitto, ingest_proc, settings):
    pub = publisher(mosquitto)
    started(ingest_proc, pub, settings)
    total = 3000
    done = threading.Event()

    def stream():
        for i in range(total):
            pub.publish(f"pl/v1/node-{i % 10}/up", frame(i // 10), qos=1)
            if i % 50 == 0:
                time.sleep(0.01)
        done.set()

    thread = threading.Thread(target=stream)
    thread.start()
    wait_for(lambda: count_frames(settings.db_path) >= 300, what="the first frames")
    ingest_proc.stop(signal.SIGKILL)  # a crash: no flush, no clean disconnect
    time.sleep(0.5)
    ingest_proc.start("--mqtt-version", "5")  # the session carries over between versions
    wait_for(lambda: count_frames(settings.db_path) >= 1200, what="frames after the crash")
    assert ingest_proc.stop(signal.SIGTERM) == 0  # and a clean restart too
    ingest_proc.start()
    thread.join(60)
    assert done.is_set()
    wait_for(lambda: count_frames(settings.db_path) >= total, timeout=60, what="every frame")
    time.sleep(0.3)
    db = connect(settings.db_path)
    for n in range(10):
        assert telemetry_store.frame_seqs(db, f"node-{n}") == list(range(total // 10))
    assert telemetry_store.count_readings(db) == 3 * total
    pub.loop_stop()


def test_broker_restart_mid_stream_loses_nothing(mosquitto, ingest_proc, settings):
    pub = publisher(mosquitto)
    started(ingest_proc, pub, settings)
    for i in range(500):
        pub.publish(f"pl/v1/node-{i % 5}/up", frame(i // 5), qos=1)
    wait_for(lambda: count_frames(settings.db_path) >= 500, what="the first 500")
    pub.loop_stop()
    pub.disconnect()
    mosquitto.stop()
    mosquitto.start()
    pub = publisher(mosquitto, client_id="test-pub-2")
    for i in range(500, 1000):
        pub.publish(f"pl/v1/node-{i % 5}/up", frame(i // 5), qos=1)
    wait_for(lambda: count_frames(settings.db_path) >= 1000, timeout=60, what="all 1000")
    db = connect(settings.db_path)
    for n in range(5):
        assert telemetry_store.frame_seqs(db, f"node-{n}") == list(range(200))
    pub.loop_stop()


def test_last_will_marks_the_node_offline(mosquitto, ingest_proc, settings):
    pub = publisher(mosquitto)
    started(ingest_proc, pub, settings)
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="node-w")
    node.will_set("pl/v1/node-w/conn", b"0", qos=1, retain=True)
    node.connect(mosquitto.host, mosquitto.port, keepalive=5)
    node.loop_start()
    publish_wait(node, "pl/v1/node-w/conn", b"1", retain=True)
    publish_wait(node, "pl/v1/node-w/up", frame(1))

    def online(expected):
        def check():
            db = connect(settings.db_path)
            try:
                return node_store.get_node(db, "node-w")["online"] is expected
            except UnknownNode:
                return False
            finally:
                db.conn.close()
        return check

    wait_for(online(True), what="node online")
    node.loop_stop()
    node._sock.close()  # vanish without DISCONNECT: the broker publishes the will
    wait_for(online(False), timeout=20, what="node offline after its will")
    pub.loop_stop()
