"""Two provider ingest workers (`fleet provider ingest`, each its own process) on one store: one
holds the provider's session, the other waits; when the holder is killed with SIGKILL mid-stream
the other takes the provider over, and every uplink is stored exactly once, with one reception.

A real mosquitto stands in for ChirpStack's broker (the fixture's JSON is ChirpStack v4's
documented uplink event).
"""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from test_ingest_mqtt import count_frames, frame, wait_for

from fleet.providers import registry
from fleet.store import identity as identity_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import connect
from fleet.store.migrate import open_db

ROOT = Path(__file__).resolve().parents[3]
FIX = Path(__file__).parent / "fixtures"
DEV_EUI = "02A1B2C3D4E5F601"
TOPIC = "application/7b0c/device/02a1b2c3d4e5f601/event/up"
TOTAL = 600


class ProviderWorker:
    def __init__(self, settings, mosquitto, log_path: Path):
        self.env = dict(os.environ, DATA_DIR=str(settings.data_dir),
                        MQTT_PORT=str(mosquitto.port))
        self.env.pop("MQTT_URL", None)
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "provider", "ingest"],
                                     env=self.env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def said(self, text: str) -> bool:
        return text.encode() in self.log_path.read_bytes()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
        self.log.close()
        return self.proc.returncode


def uplink(template: dict, n: int) -> bytes:
    msg = dict(template, fCnt=n, data=base64.b64encode(frame(n)).decode())
    return json.dumps(msg).encode()


def test_two_provider_workers_store_every_uplink_once_across_a_kill(settings, mosquitto,
                                                                     tmp_path):
    db = open_db(settings.db_path)
    identity_store.register_node(db, "lamp-7", {"mqtt_user": "lamp-7", "mqtt_hash": "x",
                                                "dev_eui": DEV_EUI})
    registry.add(db, settings.data_dir, {"name": "cs", "kind": "chirpstack",
                                         "host": mosquitto.host, "port": mosquitto.port,
                                         "application": "7b0c"}, None)
    db.conn.close()
    first = ProviderWorker(settings, mosquitto, tmp_path / "provider-0.log")
    second = None
    try:
        wait_for(lambda: first.said("provider cs: subscribed"), timeout=60,
                 what="the first worker to take the provider")
        second = ProviderWorker(settings, mosquitto, tmp_path / "provider-1.log")
        wait_for(lambda: second.said("served by another worker"), timeout=60,
                 what="the second worker to see the provider taken")

        template = json.loads((FIX / "chirpstack_uplink.json").read_bytes())
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-chirpstack")
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        done = threading.Event()

        def stream():
            for n in range(TOTAL):
                pub.publish(TOPIC, uplink(template, n), qos=1)
                if n % 20 == 0:
                    time.sleep(0.05)
            done.set()

        thread = threading.Thread(target=stream)
        thread.start()
        wait_for(lambda: count_frames(settings.db_path) >= TOTAL // 5, timeout=60,
                 what="the first uplinks")
        first.stop(signal.SIGKILL)  # no flush, no ack, its lock let go only by its death
        thread.join(120)
        assert done.is_set()
        # PostgreSQL lets go of a dead worker's lock at once; SQLite when its lease runs out.
        wait_for(lambda: second.said("provider cs: subscribed"), timeout=90,
                 what="the second worker to take the provider over")
        wait_for(lambda: count_frames(settings.db_path) >= TOTAL, timeout=90,
                 what="every uplink")
        time.sleep(1.0)  # anything stored twice would show by now
        pub.loop_stop()
        pub.disconnect()
        db = connect(settings.db_path)
        try:
            assert telemetry_store.frame_seqs(db, "lamp-7") == list(range(TOTAL))
            assert telemetry_store.count_readings(db, "lamp-7") == 3 * TOTAL
            # and one reception per uplink (one gateway each): what the killed worker stored
            # but never acked came again, with the same deduplicationId, and added none
            keys = [r["uplink_key"] for r in db.query("SELECT uplink_key FROM receptions")]
            assert len(keys) == len(set(keys)) == TOTAL
        finally:
            db.conn.close()
        assert second.stop() == 0
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)
