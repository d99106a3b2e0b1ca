"""Webhook delivery through the export worker: a real HTTP receiver in a thread, the real store,
frames stored by the real ingest path."""

import threading
import time

import pytest
from export_receivers import WebhookReceiver
from polylink import proto

from fleet.exports import registry, webhook, worker
from fleet.exports.adapter import ExportError
from fleet.ingest import Ingest
from fleet.store import exports as export_store
from fleet.store import nodes as node_store

KEY = "s3cret-hmac-key"


def frame(seq, body, ts) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.TELEMETRY, seq, body, ts)
    return bytes(buf[:n])


def ingest(db, node, first_seq, count, t0=1_700_000_000):
    """count frames of temperature + humidity for node, one per second from t0."""
    ing = Ingest(db)
    for i in range(count):
        seq = first_seq + i
        ing.add(f"pl/v1/{node}/up", frame(seq, [(0, 0, 20 + seq % 10), (1, 0, 50.0)], t0 + seq),
                time.time())
    ing.flush()


def wait_for(cond, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def running(settings):
    """Starts the export worker in a thread (short backoff); stops it at the end."""
    stop = threading.Event()
    threads = []

    def start():
        t = threading.Thread(target=worker.run, args=(settings, stop),
                             kwargs={"batch": 50, "max_backoff": 0.5}, daemon=True)
        t.start()
        threads.append(t)

    yield start
    stop.set()
    for t in threads:
        t.join(timeout=30)


def test_every_reading_arrives_once_signed_and_in_order(db, settings, running):
    ingest(db, "n1", 1, 40)
    with WebhookReceiver(KEY) as rx:
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url},
                     KEY, from_start=True)
        running()
        assert wait_for(lambda: len(rx.records) == 80)
        ingest(db, "n2", 1, 30)  # stored while it runs
        assert wait_for(lambda: len(rx.records) == 140)
        assert wait_for(lambda: registry.get(db, "city")["behind"] == 0)
        state = registry.get(db, "city")
        assert state["delivered"] == 140 and state["refused"] == 0
        assert state["state"] == "up to date" and state["secret_set"]
        assert "secret" not in state
        assert rx.bad_signatures == 0
        times = [t for (name, t) in rx.order if name.startswith("urn:dev:polylink:n1:temp")]
        assert times == sorted(times) and len(times) == 40
        first = rx.records[("urn:dev:polylink:n1:temperature", 1_700_000_001.0)]
        assert first["u"] == "Cel" and first["v"] == 21


def test_a_destination_that_was_down_gets_what_it_missed_in_order(db, settings, running):
    with WebhookReceiver(KEY) as rx:
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url},
                     KEY)
        rx.down = True
        running()
        ingest(db, "n1", 1, 60)
        assert wait_for(lambda: registry.get(db, "city")["state"] == "down")
        state = registry.get(db, "city")
        assert state["behind"] == 120 and "HTTP 503" in state["last_error"]
        assert "maintenance" in state["last_error"]
        rx.down = False
        assert wait_for(lambda: len(rx.records) == 120)
        assert wait_for(lambda: registry.get(db, "city")["state"] == "up to date")
        times = [t for (name, t) in rx.order if name.endswith("temperature")]
        assert times == sorted(times)
        assert registry.get(db, "city")["last_error"] is None


def test_a_node_the_destination_refuses_does_not_block_the_others(db, settings, running):
    with WebhookReceiver(KEY) as rx:
        rx.refuse_node = "n-bad"
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url},
                     KEY)
        ingest(db, "n1", 1, 5)
        ingest(db, "n-bad", 1, 5)
        ingest(db, "n2", 1, 5)
        running()
        assert wait_for(lambda: registry.get(db, "city")["refused"] == 10)
        assert wait_for(lambda: len(rx.records) == 20)
        assert not any("n-bad" in name for name, _ in rx.records)
        refused = registry.refused(db, "city")
        assert len(refused) == 10 and all("HTTP 422" in r["reason"] for r in refused)
        assert {r["item_id"].split(":")[1] for r in refused} == {"n-bad"}


def test_a_wrong_key_is_down_not_refused_and_nothing_is_lost(db, settings, running):
    with WebhookReceiver(KEY) as rx:
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url},
                     "wrong-key")
        ingest(db, "n1", 1, 3)
        running()
        assert wait_for(lambda: registry.get(db, "city")["state"] == "down")
        assert "HTTP 401" in registry.get(db, "city")["last_error"]
        assert registry.get(db, "city")["behind"] == 6
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url},
                     KEY)  # the integrator tells us the right key
        assert wait_for(lambda: len(rx.records) == 6)


def test_only_the_chosen_nodes_and_tags_go_out(db, settings, running):
    ingest(db, "n1", 1, 2)
    ingest(db, "n2", 1, 2)
    ingest(db, "n3", 1, 2)
    node_store.tag_nodes(db, ["n3"], "park")
    with WebhookReceiver(KEY) as rx:
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url,
                                             "nodes": "n1", "tags": ["park"]},
                     KEY, from_start=True)
        running()
        assert wait_for(lambda: registry.get(db, "city")["behind"] == 0)
        nodes = {name.split(":")[3] for name, _ in rx.records}
        assert nodes == {"n1", "n3"}


def test_a_new_destination_starts_after_what_is_stored_unless_asked(db, settings):
    ingest(db, "n1", 1, 5)
    a = registry.add(db, settings.data_dir, {"name": "a", "kind": "webhook",
                                             "url": "https://example.org/h"}, KEY)
    b = registry.add(db, settings.data_dir, {"name": "b", "kind": "webhook",
                                             "url": "https://example.org/h"}, KEY,
                     from_start=True)
    assert (a["behind"], b["behind"]) == (0, 10)


def test_the_secret_is_never_shown_and_only_goes_where_it_was_given(db, settings):
    registry.add(db, settings.data_dir, {"name": "a", "kind": "webhook",
                                         "url": "https://example.org/h"}, KEY)
    with pytest.raises(registry.SecretNeeded):
        registry.add(db, settings.data_dir, {"name": "a", "kind": "webhook",
                                             "url": "https://evil.example/h"}, None)
    kept = registry.add(db, settings.data_dir, {"name": "a", "kind": "webhook",
                                                "url": "https://example.org/h", "tags": "x"},
                        None)
    assert kept["secret_set"] and KEY not in repr(kept)
    assert registry.destination(db, settings.data_dir, "a").secret == KEY
    raw = db.conn.execute("SELECT secret FROM export_destinations").fetchone()[0]
    assert KEY.encode() not in raw


@pytest.mark.parametrize("cfg, words", [
    ({"name": "A", "kind": "webhook", "url": "https://x/"}, "name must be"),
    ({"name": "a", "kind": "fax", "url": "https://x/"}, "kind must be one of"),
    ({"name": "a", "kind": "webhook", "url": "http://example.org/"}, "must use https"),
    ({"name": "a", "kind": "webhook", "url": "ftp://x/"}, "url must be https://"),
    ({"name": "a", "kind": "webhook", "url": "https://x/", "nodes": ["Bad!"]}, "nodes must be"),
    ({"name": "a", "kind": "webhook", "url": "https://x/", "options": {"z": 1}}, "unknown"),
])
def test_bad_settings_say_what_is_wrong(db, settings, cfg, words):
    with pytest.raises(ExportError, match=words):
        registry.add(db, settings.data_dir, cfg, KEY)


def test_signature_verifies_and_rejects_tampering_and_old_ones():
    body = b'[{"n":"temperature","v":21}]'
    header = webhook.signature(KEY, 1_700_000_000, body)
    assert webhook.verify(KEY, header, body, now=1_700_000_010)
    assert not webhook.verify(KEY, header, body + b" ", now=1_700_000_010)
    assert not webhook.verify("other", header, body, now=1_700_000_010)
    assert not webhook.verify(KEY, header, body, now=1_700_001_000)
    assert not webhook.verify(KEY, "garbage", body, now=1_700_000_010)


def test_events_go_out_as_senml_records_after_their_readings(db, settings, running):
    ingest(db, "n1", 1, 2)
    ing = Ingest(db)
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.EVENT, 9, {"code": 7, "value": -3, "text": "door open"},
                     1_700_000_010)
    ing.add("pl/v1/n1/up", bytes(buf[:n]), time.time())
    ing.flush()
    with WebhookReceiver(KEY) as rx:
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url},
                     KEY, from_start=True)
        running()
        assert wait_for(lambda: len(rx.records) == 5)
        event = rx.records[("urn:dev:polylink:n1:event/7", 1_700_000_010.0)]
        assert event["vs"] == "door open"
        # the receiver has the pack before the worker records the send: wait for the record
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 5)


def test_paused_destination_waits_and_resumes_where_it_stopped(db, settings, running):
    with WebhookReceiver(KEY) as rx:
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url},
                     KEY)
        running()
        ingest(db, "n1", 1, 5)
        assert wait_for(lambda: len(rx.records) == 10)
        assert registry.set_enabled(db, "city", False)["state"] == "paused"
        time.sleep(2.5)  # the worker notices within RELOAD_S
        ingest(db, "n1", 6, 5)
        time.sleep(1.5)
        assert len(rx.records) == 10 and registry.get(db, "city")["behind"] == 10
        registry.set_enabled(db, "city", True)
        assert wait_for(lambda: len(rx.records) == 20)
        assert rx.dupes == 0


def test_a_batch_read_ahead_is_dropped_when_the_cursor_is_not_where_it_started(db, settings):
    """While behind, the loop reads the next batch ahead; if the cursor is elsewhere by the
    time it is needed (here: the destination added again from the start), it reads again from
    the cursor instead of sending what it read ahead, so nothing is skipped."""
    from concurrent.futures import ThreadPoolExecutor

    from fleet.store.migrate import open_db

    ingest(db, "n1", 1, 100)  # 200 readings
    with WebhookReceiver() as rx:
        dest = {"name": "city", "kind": "webhook", "url": rx.url}
        registry.add(db, settings.data_dir, dest, None, from_start=True)
        loop = worker.Loop(settings, "city", threading.Event(), batch=50)
        loop._ahead_db, loop._pool = open_db(settings.db_path), ThreadPoolExecutor(1)
        sender = webhook.open(registry.destination(db, settings.data_dir, "city"))
        try:
            assert loop.step(db, sender)  # 50 delivered, the next 100 read ahead
            assert len(rx.records) == 50 and loop._ahead is not None
            registry.remove(db, "city")
            registry.add(db, settings.data_dir, dest, None, from_start=True)
            assert loop.step(db, sender)
            assert rx.dupes == 50  # the first batch again, not the one read ahead
            while loop.step(db, sender):
                pass
        finally:
            sender.close()
            loop._pool.shutdown()
            loop._ahead_db.close()
        assert len(rx.records) == 200 and rx.dupes == 50
        times = [t for (name, t) in rx.order if name.endswith("temperature")]
        assert times == [1_700_000_000.0 + s for s in range(1, 101)]
        assert registry.get(db, "city")["delivered"] == 200


def test_a_step_past_only_other_nodes_rows_counts_as_progress(db, settings):
    """A read that finds none of the destination's rows but moves its cursor past others' is
    progress: the loop looks again at once instead of idling (and backing off) as if caught up.
    On PostgreSQL one read walks a bounded piece of the log, so a destination that selects few
    nodes meets such reads whenever it is behind."""
    ingest(db, "n1", 1, 30)  # another node's readings only
    with WebhookReceiver() as rx:
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook", "url": rx.url,
                                             "nodes": "n2"}, None, from_start=True)
        loop = worker.Loop(settings, "city", threading.Event(), batch=50)
        sender = webhook.open(registry.destination(db, settings.data_dir, "city"))
        try:
            before = export_store.get_destination(db, "city")["reading_at"]
            assert loop.step(db, sender)  # nothing sent, the cursor past n1's rows
            assert not rx.records
            assert export_store.get_destination(db, "city")["reading_at"] != before
            assert not loop.step(db, sender)  # caught up now
            ingest(db, "n2", 1, 3)
            assert loop.step(db, sender)
            assert len(rx.records) == 6
        finally:
            sender.close()
