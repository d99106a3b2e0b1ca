"""The ingest's decode -> batch -> store path, driven by direct calls (no broker)."""

import random

import pytest
from polylink import proto

from fleet.ingest import EV_SEQ_RESTART, Ingest
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store

READING = [(0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71)]


def frame(mtype, seq, body, ts=None) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, mtype, seq, body, ts)
    return bytes(buf[:n])


def up(node="n1"):
    return f"pl/v1/{node}/up"


def test_telemetry_is_stored_and_node_enrolled_on_first_contact(db):
    ing = Ingest(db)
    ing.add(up(), frame(proto.TELEMETRY, 1, READING, ts=1_700_000_000), 1_700_000_005.0)
    assert ing.flush() == 1
    node = node_store.get_node(db, "n1")
    assert node["online"] is True
    assert node["last_seen"] == 1_700_000_005.0
    assert node["provider"] == "mqtt"
    assert node["battery"] == 3.71
    # The device timestamp wins over the arrival time for the reading's time.
    assert telemetry_store.readings(db, "n1") == [(1_700_000_000.0, q, i, v) for q, i, v in READING]
    assert telemetry_store.frame_seqs(db, "n1") == [1]


def test_a_later_commit_of_an_older_contact_keeps_the_newest(db):
    # Two workers: the one holding the older frame commits last. Last seen, the battery of the
    # older frame aside, and the highest seq stay the newest contact's.
    newer, older = Ingest(db), Ingest(db)
    newer.add(up(), frame(proto.TELEMETRY, 8, READING), 200.0)
    newer.flush()
    older.add(up(), frame(proto.TELEMETRY, 7, [(0, 0, 20.0)]), 100.0)
    older.flush()
    node = node_store.get_node(db, "n1")
    assert node["last_seen"] == 200.0
    assert node["battery"] == 3.71  # the older frame carried none
    assert node_store.up_seqs(db)["n1"] == 8


def test_duplicates_are_stored_once_within_and_across_batches(db):
    ing = Ingest(db)
    f = frame(proto.TELEMETRY, 5, READING)
    ing.add(up(), f, 1.0)
    ing.add(up(), f, 2.0)
    ing.flush()
    ing.add(up(), f, 3.0)
    ing.flush()
    assert telemetry_store.count_frames(db, "n1") == 1
    assert telemetry_store.count_readings(db, "n1") == 3
    assert ing.stored == 1 and ing.duplicates == 2


def test_dedupe_survives_a_restart_and_spans_providers(db):
    f = frame(proto.TELEMETRY, 9, READING)
    first = Ingest(db)
    first.add(up(), f, 1.0)
    first.flush()
    # A new worker (restart) and a second provider carrying the same frame.
    again = Ingest(db, provider="ttn")
    again.add(up(), f, 2.0)
    again.add(up(), frame(proto.TELEMETRY, 10, READING), 3.0)
    again.flush()
    assert telemetry_store.frame_seqs(db, "n1") == [9, 10]
    assert telemetry_store.count_readings(db, "n1") == 6
    assert node_store.get_node(db, "n1")["provider"] == "ttn"


def test_seq_is_extended_past_16_bits_and_resumes_after_restart(db):
    ing = Ingest(db)
    for seq in (65534, 65535, 0, 1):
        ing.add(up(), frame(proto.TELEMETRY, seq, READING), 1.0)
    ing.flush()
    restarted = Ingest(db)
    restarted.add(up(), frame(proto.TELEMETRY, 2, READING), 2.0)
    restarted.add(up(), frame(proto.TELEMETRY, 1, READING), 2.0)  # a late repeat
    restarted.flush()
    assert telemetry_store.frame_seqs(db, "n1") == [65534, 65535, 65536, 65537, 65538]


def test_bad_frames_are_kept_counted_and_never_raise(db):
    ing = Ingest(db)
    good = frame(proto.TELEMETRY, 1, READING)
    ing.add(up(), b"", 1.0)
    ing.add(up(), good[:5], 1.0)
    ing.add(up(), bytes([0xE0]) + good[1:], 1.0)  # version 7
    ing.add(up(), frame(proto.COMMAND, 2, {"cid": 1, "cmd": 1}), 1.0)
    ing.add("pl/v1/Bad_Node/up", good, 1.0)
    ing.add("pl/v1/n1/sideways", good, 1.0)
    ing.add("other/topic", good, 1.0)
    ing.add("pl/v1/n1/conn", b"maybe", 1.0)
    ing.add(up(), good, 1.0)
    ing.flush()
    node = node_store.get_node(db, "n1")
    assert node["bad_frames"] == 6
    assert telemetry_store.count_frames(db, "n1") == 1
    rows = telemetry_store.bad_frames(db)
    assert len(rows) == 8
    errors = " | ".join(r["error"] for r in rows)
    for needle in ("truncated", "version", "not an uplink", "node id", "topic kind",
                   "conn payload"):
        assert needle in errors
    kept = {r["payload"] for r in rows if r["node_id"] == "n1"}
    assert good[:5] in kept and b"" in kept


def test_random_garbage_never_crashes_the_ingest(db):
    rnd = random.Random(1234)
    ing = Ingest(db)
    good = frame(proto.TELEMETRY, 1, READING)
    for _ in range(2000):
        if rnd.random() < 0.5:
            payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        else:
            payload = bytearray(good)
            payload[rnd.randrange(len(payload))] = rnd.randrange(256)
            payload = bytes(payload)
        ing.add(up(f"n{rnd.randrange(5)}"), payload, 1.0)
    ing.flush()
    total = telemetry_store.count_frames(db) + len(telemetry_store.bad_frames(db, limit=5000))
    assert total + ing.duplicates == 2000


def test_status_event_and_result_update_the_registry(db):
    node_store.enrol_node(db, "n1")
    cid, _ = command_store.create_command(db, "n1", "set_interval", 30, "me")
    ing = Ingest(db)
    ing.add(up(), frame(proto.STATUS, 1, {"fw": "0.2.0", "uptime": 42, "reset": 1,
                                          "heap_free": 30000, "rssi": -61, "queue": 3,
                                          "dropped": 1, "boots": 4, "interval": 30}), 5.0)
    ing.add(up(), frame(proto.EVENT, 2, {"code": 7, "value": -3, "text": "door"}), 6.0)
    ing.add(up(), frame(proto.RESULT, 3, {"cid": cid, "code": 0, "value": 30}), 7.0)
    ing.flush()
    node = node_store.get_node(db, "n1")
    assert (node["firmware_version"], node["uptime"], node["rssi"], node["queue"],
            node["dropped"], node["boots"], node["interval"]) == ("0.2.0", 42, -61, 3, 1, 4, 30)
    assert telemetry_store.events(db, "n1")[0]["text"] == "door"
    command = command_store.get_command(db, "n1", cid)
    assert (command["result_code"], command["result_value"], command["result_at"]) == (0, 30, 7.0)


def test_micropython_from_the_boot_status_stays_until_another_boot_names_one(db):
    ing = Ingest(db)
    ing.add(up(), frame(proto.STATUS, 1, {"fw": "0.2.0", "uptime": 3, "micropython": "1.24.1"}),
            1.0)
    ing.flush()
    assert node_store.get_node(db, "n1")["micropython_version"] == "1.24.1"
    # The periodic STATUS leaves the field out: the node still runs what its boot STATUS said.
    ing.add(up(), frame(proto.STATUS, 2, {"fw": "0.2.0", "uptime": 903}), 2.0)
    ing.flush()
    node = node_store.get_node(db, "n1")
    assert (node["micropython_version"], node["uptime"]) == ("1.24.1", 903)
    ing.add(up(), frame(proto.STATUS, 3, {"fw": "0.3.0", "uptime": 4, "micropython": "1.25.0"}),
            3.0)
    ing.flush()
    node = node_store.get_node(db, "n1")
    assert (node["firmware_version"], node["micropython_version"]) == ("0.3.0", "1.25.0")
    # A STATUS repeated (same seq, another provider) changes nothing back.
    ing.add(up(), frame(proto.STATUS, 1, {"fw": "0.2.0", "uptime": 3, "micropython": "1.24.1"}),
            4.0)
    ing.flush()
    assert node_store.get_node(db, "n1")["micropython_version"] == "1.25.0"


def test_result_for_another_nodes_command_changes_nothing(db):
    node_store.enrol_node(db, "n1")
    cid, _ = command_store.create_command(db, "n1", "reboot", None, "me")
    ing = Ingest(db)
    ing.add(up("n2"), frame(proto.RESULT, 1, {"cid": cid, "code": 0}), 1.0)
    ing.flush()
    assert command_store.get_command(db, "n1", cid)["result_at"] is None


def test_a_result_for_a_command_never_sent_is_a_bad_frame(db):
    node_store.enrol_node(db, "n1")
    cid, _ = command_store.create_command(db, "n1", "reboot", None, "me")
    ing = Ingest(db)
    forged = frame(proto.RESULT, 1, {"cid": cid + 41, "code": 0})
    ing.add(up("n1"), forged, 1.0)
    ing.add(up("n2"), frame(proto.RESULT, 1, {"cid": cid, "code": 0}), 1.0)  # not n2's command
    ing.add(up("n1"), frame(proto.RESULT, 2, {"cid": cid, "code": 0}), 2.0)  # the real one
    ing.flush()
    assert command_store.get_command(db, "n1", cid)["result_at"] == 2.0
    (bad,) = telemetry_store.bad_frames(db, "n1")
    assert f"command id {cid + 41}" in bad["error"] and "never sent" in bad["error"]
    assert bytes(bad["payload"]) == forged and bad["topic"] == up("n1")
    assert node_store.get_node(db, "n1")["bad_frames"] == 1
    (bad2,) = telemetry_store.bad_frames(db, "n2")
    assert f"command id {cid}" in bad2["error"]


def test_conn_topic_sets_online_and_offline(db):
    ing = Ingest(db)
    ing.add("pl/v1/n1/conn", b"1", 10.0)
    ing.flush()
    assert node_store.get_node(db, "n1")["online"] is True
    ing.add(up(), frame(proto.TELEMETRY, 1, READING), 11.0)
    ing.add("pl/v1/n1/conn", b"0", 12.0)  # the last will, after the node's final frame
    ing.flush()
    node = node_store.get_node(db, "n1")
    assert node["online"] is False and node["last_seen"] == 11.0


def test_retained_conn_is_not_contact(db):
    ing = Ingest(db)
    ing.add("pl/v1/n1/conn", b"1", 10.0, retained=True)
    ing.flush()
    node = node_store.get_node(db, "n1")
    assert node["online"] is True and node["last_seen"] is None


def test_a_failed_commit_keeps_the_batch_for_retry(db, monkeypatch):
    ing = Ingest(db)
    ing.add(up(), frame(proto.TELEMETRY, 1, READING), 1.0)

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(telemetry_store, "store_batch", broken)
    with pytest.raises(RuntimeError):
        ing.flush()
    monkeypatch.undo()
    assert ing.pending == 1
    assert ing.flush() == 1
    assert telemetry_store.count_frames(db, "n1") == 1


def test_conn_messages_do_not_lose_the_seq_state(db):
    ing = Ingest(db)
    ing.add("pl/v1/n1/conn", b"1", 1.0)
    ing.flush()
    ing.add(up(), frame(proto.TELEMETRY, 65535, READING), 2.0)
    ing.add("pl/v1/n1/conn", b"1", 3.0)
    ing.flush()
    ing.add("pl/v1/n1/conn", b"1", 4.0)
    ing.flush()
    restarted = Ingest(db)
    restarted.add(up(), frame(proto.TELEMETRY, 0, READING), 5.0)
    restarted.flush()
    assert telemetry_store.frame_seqs(db, "n1") == [65535, 65536]


def test_a_restarted_counter_is_found_at_the_boot_status_and_its_frames_are_kept(db):
    # A re-flashed node (or one that lost its counter) numbers from 0 again: without the restart
    # rule (docs/protocol.md, section 2) every one of its frames is dropped as a duplicate.
    t0 = 1_700_000_000
    ing = Ingest(db)
    boot = frame(proto.STATUS, 0, {"fw": "1.0.0", "uptime": 5}, ts=t0 + 5)
    ing.add(up(), boot, t0 + 5)
    for i in range(1, 20):
        ing.add(up(), frame(proto.TELEMETRY, i, READING, ts=t0 + 60 * i), t0 + 60 * i)
    ing.flush()
    ing.add(up(), boot, t0 + 7200)  # an hour-late redelivery of the old boot STATUS: a duplicate
    ing.flush()
    assert (ing.stored, ing.duplicates, ing.restarts) == (20, 1, 0)

    t1 = t0 + 7300  # re-flashed: numbering starts again at 0, with a STATUS after the boot
    reboot = frame(proto.STATUS, 0, {"fw": "1.0.1", "uptime": 4}, ts=t1 + 4)
    ing.add(up(), reboot, t1 + 4)
    for i in range(1, 10):
        ing.add(up(), frame(proto.TELEMETRY, i, READING, ts=t1 + 60 * i), t1 + 60 * i)
    ing.add(up(), reboot, t1 + 100)  # the new boot STATUS again: a duplicate, not a 2nd restart
    ing.flush()
    assert (ing.stored, ing.duplicates, ing.restarts) == (30, 2, 1)
    assert telemetry_store.count_frames(db, "n1") == 30
    assert telemetry_store.frame_seqs(db, "n1")[20:] == list(range(65536, 65546))
    assert node_store.get_node(db, "n1")["firmware_version"] == "1.0.1"
    (event,) = telemetry_store.events(db, "n1")
    assert event["code"] == EV_SEQ_RESTART and event["value"] == 0
    assert "seq restarted" in event["text"]

    # Another worker (or this one restarted) goes on in the new numbering.
    again = Ingest(db)
    again.add(up(), frame(proto.TELEMETRY, 10, READING, ts=t1 + 600), t1 + 600)
    again.add(up(), frame(proto.TELEMETRY, 9, READING, ts=t1 + 540), t1 + 601)
    again.flush()
    assert (again.stored, again.duplicates, again.restarts) == (1, 1, 0)
    assert telemetry_store.frame_seqs(db, "n1")[-1] == 65546
