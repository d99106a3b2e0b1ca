"""The project's mosquitto config keeps a QoS-1 burst for an offline consumer; defaults do not."""

import os
import socket
import sqlite3
import struct
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import fleet_db, free_port, start_mosquitto

from fleet.broker import server as fleet_broker

TOPIC = "pl/v1/burst-node/up"


def _connect_packet(client_id: str) -> bytes:
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id)) + client_id.encode()
    return bytes([0x10, len(body)]) + body


def publish_burst(host: str, port: int, topic: str, count: int) -> None:
    """Publish count QoS-1 messages (payload: the 4-byte index) and wait for every PUBACK.

    A hand-written publisher: it pipelines the whole burst in one write, which takes under a
    second where paho needs ~15 s, and the broker under test is the real thing either way.
    """
    name = topic.encode()
    packets = bytearray()
    for i in range(count):
        body = struct.pack("!H", len(name)) + name + struct.pack("!HI", i % 65535 + 1, i)
        packets += bytes([0x32, len(body)]) + body
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(_connect_packet("burst-publisher"))
        assert sock.recv(4) == b"\x20\x02\x00\x00", "broker refused the publisher"
        sock.sendall(packets)
        acked = 0
        while acked < 4 * count:  # PUBACK is 4 bytes
            chunk = sock.recv(1 << 20)
            assert chunk, f"broker closed the connection after {acked // 4} of {count} PUBACKs"
            acked += len(chunk)
        sock.sendall(b"\xe0\x00")


class SlowConsumer:
    """A paho client with a persistent session (clean_session False), like the ingest worker."""

    def __init__(self, broker, client_id: str = "slow-consumer"):
        self.broker = broker
        self.seen: list[int] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        self.client.on_message = lambda _c, _u, msg: self.seen.append(
            int.from_bytes(msg.payload, "big"))
        self.subscribed = False
        self.client.on_subscribe = lambda *_: setattr(self, "subscribed", True)

    def subscribe_then_leave(self) -> None:
        """Create the session and its subscription, then go offline."""
        self.client.connect(self.broker.host, self.broker.port)
        self.client.subscribe(TOPIC, qos=1)
        deadline = time.monotonic() + 10
        while not self.subscribed and time.monotonic() < deadline:
            self.client.loop(0.05)
        assert self.subscribed, "subscription was not acknowledged"
        self.client.disconnect()

    def come_back_and_drain(self, expected: int, idle: float = 3.0) -> list[int]:
        """Reconnect and read until expected messages arrived or nothing came for idle seconds."""
        self.client.connect(self.broker.host, self.broker.port)
        last = time.monotonic()
        while len(self.seen) < expected and time.monotonic() - last < idle:
            before = len(self.seen)
            self.client.loop(0.1)
            if len(self.seen) > before:
                last = time.monotonic()
        self.client.disconnect()
        return self.seen


def test_project_config_keeps_a_100k_burst_for_an_offline_persistent_consumer(mosquitto):
    consumer = SlowConsumer(mosquitto)
    consumer.subscribe_then_leave()
    publish_burst(mosquitto.host, mosquitto.port, TOPIC, 100_000)
    seen = consumer.come_back_and_drain(100_000)
    assert len(seen) == 100_000
    assert sorted(seen) == list(range(100_000)), "a message was lost or delivered twice"


def test_mosquitto_defaults_would_drop_most_of_a_burst(tmp_path):
    # The same burst check against a broker with mosquitto's default limits: it must fail, or
    # the test above would prove nothing about the project's config.
    defaults = start_mosquitto(tmp_path, config=lambda port: (
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {fleet_broker.current_user()}\n"))
    try:
        consumer = SlowConsumer(defaults)
        consumer.subscribe_then_leave()
        publish_burst(defaults.host, defaults.port, TOPIC, 5_000)
        seen = consumer.come_back_and_drain(5_000, idle=1.0)
    finally:
        defaults.stop()
    assert len(seen) <= 1_100, f"mosquitto's defaults kept {len(seen)} of 5000"


def test_queued_messages_survive_a_broker_restart(mosquitto):
    consumer = SlowConsumer(mosquitto, client_id="restart-consumer")
    consumer.subscribe_then_leave()
    publish_burst(mosquitto.host, mosquitto.port, TOPIC, 5_000)
    mosquitto.stop()
    mosquitto.start()
    seen = consumer.come_back_and_drain(5_000)
    assert sorted(seen) == list(range(5_000))


def test_start_refuses_a_port_that_is_taken(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = fleet_broker.MosquittoBroker(port, tmp_path)
        with pytest.raises(fleet_broker.PortInUseError) as err:
            broker.start()
    assert f"port {port} is already in use" in str(err.value)
    assert f"MQTT_URL=mqtt://127.0.0.1:{port}" in str(err.value)
    assert "MQTT_PORT=" in str(err.value)


def test_config_has_the_limits_and_listens_only_on_loopback(tmp_path):
    text = fleet_broker.render_config(free_port(), tmp_path)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1]
             for line in text.splitlines() if line and not line.startswith("#")}
    assert lines["listener"].endswith(" 127.0.0.1")
    assert lines["persistence"] == "true"
    assert int(lines["max_queued_messages"]) >= 100_000
    assert lines["max_queued_bytes"] == "0"


def test_broker_refuses_a_data_dir_with_spaces(tmp_path):
    with pytest.raises(fleet_broker.BrokerError, match="whitespace"):
        fleet_broker.render_config(1883, tmp_path / "my data")


def test_amqtt_fallback_serves_mqtt(tmp_path):
    broker = fleet_broker.AmqttBroker(free_port(), tmp_path)
    broker.start()
    try:
        assert fleet_broker.mqtt_ready(broker.host, broker.port)
    finally:
        broker.stop()
    assert not broker.running


def test_without_mosquitto_make_broker_falls_back_to_amqtt(monkeypatch, tmp_path):
    monkeypatch.setattr(fleet_broker, "find_mosquitto", lambda: None)
    assert isinstance(fleet_broker.make_broker(free_port(), tmp_path), fleet_broker.AmqttBroker)


def test_amqtt_fallback_carries_frames_into_the_store(tmp_path):
    # The path `make run` takes on a machine without mosquitto: amqtt, and the ingest worker
    # speaking MQTT 3.1.1 (amqtt has no MQTT 5).
    from polylink import proto

    from fleet.store import telemetry as telemetry_store
    from fleet.store.base import connect

    broker = fleet_broker.AmqttBroker(free_port(), tmp_path / "broker").start()
    env = dict(os.environ, DATA_DIR=str(tmp_path), MQTT_PORT=str(broker.port))
    env.pop("MQTT_URL", None)
    worker = subprocess.Popen([sys.executable, "-m", "fleet.cli", "ingest", "--mqtt-version",
                               "3.1.1"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="amqtt-node")
    try:
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        buf = bytearray(64)

        def send(seq: int) -> None:
            n = proto.encode(buf, proto.TELEMETRY, seq, [(0, 0, 21.5)])
            publisher.publish("pl/v1/amqtt-node/up", bytes(buf[:n]), qos=1).wait_for_publish(5)

        def stored() -> list[int]:
            try:
                db = connect(fleet_db(tmp_path))
                try:
                    return telemetry_store.frame_seqs(db, "amqtt-node")
                finally:
                    db.conn.close()
            except sqlite3.OperationalError:  # the worker has not created the schema yet
                return []

        deadline = time.monotonic() + 30
        # Until the worker has subscribed, frames go nowhere: resend seq 0 until it is stored.
        while not stored() and time.monotonic() < deadline:
            send(0)
            time.sleep(0.2)
        for seq in range(1, 10):
            send(seq)
        while len(stored()) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stored() == list(range(10))
    finally:
        publisher.loop_stop()
        worker.terminate()
        worker.wait(20)
        broker.stop()
