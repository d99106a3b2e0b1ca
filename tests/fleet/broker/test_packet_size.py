"""No client fills the disk or the fleet's memory with one message (#19 security 1)."""

import threading
import time

from polylink import proto

from fleet import mqtt
from fleet.broker import server
from fleet.ingest import Ingest
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store


def _subscriber(broker, got: list, ready: threading.Event):
    c = mqtt.client("watcher")
    c.on_connect = lambda client, *_: client.subscribe("pl/v1/+/up", 1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda _c, _u, msg: got.append(len(msg.payload))
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _publish(broker, client_id: str, size: int) -> bool:
    """Publish size bytes at QoS 1; True if the broker acknowledged it."""
    c = mqtt.client(client_id)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        info = c.publish(f"pl/v1/{client_id}/up", b"\x01" * size, qos=1)
        info.wait_for_publish(3)
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
    finally:
        c.loop_stop()
        c.disconnect()


def test_the_broker_refuses_a_packet_bigger_than_any_client_needs(mosquitto):
    got: list = []
    ready = threading.Event()
    watcher = _subscriber(mosquitto, got, ready)
    try:
        assert ready.wait(5)
        assert not _publish(mosquitto, "flooder", 25 * 1024 * 1024 // 10)
        assert _publish(mosquitto, "node-1", proto.MAX_FRAME)
        assert _publish(mosquitto, "claims", 2000)  # a claim answer's size
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(got) == [proto.MAX_FRAME, 2000]
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert f"max_packet_size {getattr(server, 'MAX_PACKET_SIZE', None)}" in (mosquitto.broker_dir
                                                           / "mosquitto.conf").read_text()


def test_a_bad_frame_keeps_a_prefix_and_its_size(db, client, auth_headers):
    ing = Ingest(db)
    huge = b"\xee" * 3_000_000
    ing.add("pl/v1/n1/up", huge, 1.0)
    ing.flush()
    stored = db.conn.execute("SELECT length(payload), size FROM bad_frames").fetchone()
    assert tuple(stored) == (64, len(huge))
    (row,) = telemetry_store.bad_frames(db, "n1")
    assert row["size"] == len(huge) and len(row["payload"]) == 64
    r = client.get("/api/v1/nodes/n1/bad-frames", headers=auth_headers)
    (frame,) = r.get_json()["frames"]
    assert frame["size"] == len(huge) and frame["truncated"] is True
    assert len(frame["payload_hex"]) <= 2 * 64 and len(r.data) < 4096


def test_rows_stored_whole_before_are_cut_when_read(db, client, auth_headers, logged_in):
    """A database from before the fix may hold megabytes per row: never sent whole."""
    node_store.enrol_node(db, "n1")
    db.conn.execute("INSERT INTO bad_frames (node_id, received_at, topic, payload, error) "
                    "VALUES ('n1', 1, 'pl/v1/n1/up', ?, 'x')", (b"\xab" * 2_000_000,))
    r = client.get("/api/v1/nodes/n1/bad-frames", headers=auth_headers)
    (frame,) = r.get_json()["frames"]
    assert frame["size"] == 2_000_000 and len(r.data) < 4096
    page = logged_in.get("/nodes/n1")
    assert page.status_code == 200 and len(page.data) < 200_000
    assert "abab" * 40 not in page.get_data(as_text=True)
