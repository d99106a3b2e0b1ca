"""store_batch writes every value of a batch back exactly, on both backends: on PostgreSQL the
batch goes as arrays in binary format (PgConnection.execute_binary), where a column of only NULLs,
ints beside floats and ints past 32 bits each take another path than the common case."""

from polylink import proto

from fleet.store import telemetry as telemetry_store
from fleet.store.telemetry import Batch

TELEMETRY = proto.TELEMETRY


def test_a_batch_of_edge_values_is_stored_exactly(db):
    batch = Batch()
    batch.new_nodes = [("n1", "mqtt", 1.0), ("n2", None, 1.0)]
    # No device time in any frame, no provider for n2: whole columns of NULLs.
    batch.frames = [
        ("n1", 1, TELEMETRY, 1_800_000_000.25, None, "mqtt",
         [(0, 0, 21), (1, 0, -0.5), (7, 3, 2**40)]),  # an int value, a float, an int past 32 bits
        ("n2", 2**31 + 5, TELEMETRY, 1_800_000_001.5, None, None, [(0, 0, 1e300)]),
        ("n1", 1, TELEMETRY, 1_800_000_002.0, None, "mqtt", [(0, 0, 99.0)]),  # same seq twice
    ]
    assert telemetry_store.store_batch(db, batch, TELEMETRY, proto.STATUS, proto.EVENT,
                                      proto.RESULT, proto.OTA_UP) == 2

    frames = db.execute("SELECT node_id, seq, received_at, device_ts, provider FROM frames"
                        " ORDER BY node_id").fetchall()
    assert [tuple(f) for f in frames] == [("n1", 1, 1_800_000_000.25, None, "mqtt"),
                                          ("n2", 2**31 + 5, 1_800_000_001.5, None, None)]
    readings = db.execute("SELECT node_id, t, qid, inst, value FROM readings"
                          " ORDER BY node_id, qid").fetchall()
    assert [tuple(r) for r in readings] == [
        ("n1", 1_800_000_000.25, 0, 0, 21.0), ("n1", 1_800_000_000.25, 1, 0, -0.5),
        ("n1", 1_800_000_000.25, 7, 3, float(2**40)), ("n2", 1_800_000_001.5, 0, 0, 1e300)]
    latest = db.execute("SELECT node_id, qid, inst, value FROM latest ORDER BY node_id, qid")
    assert [tuple(r) for r in latest.fetchall()] == [
        ("n1", 0, 0, 21.0), ("n1", 1, 0, -0.5), ("n1", 7, 3, float(2**40)), ("n2", 0, 0, 1e300)]


def test_a_battery_reading_is_stored_with_or_without_contact_and_kept_when_absent(db):
    def store(frames, touch):
        batch = Batch()
        batch.new_nodes = [("n1", "mqtt", 1.0), ("n2", "mqtt", 1.0)]
        batch.frames = frames
        batch.touch = touch
        telemetry_store.store_batch(db, batch, TELEMETRY, proto.STATUS, proto.EVENT,
                                    proto.RESULT, proto.OTA_UP)
        return dict(db.execute("SELECT id, battery FROM nodes ORDER BY id").fetchall())

    battery = (2, 0, 3.71)  # quantity 2, instance 0: the node's own battery
    # n1 seen in the batch (contact and battery in one update), n2 only its frame (no contact)
    assert store([("n1", 1, TELEMETRY, 10.0, None, "mqtt", [battery]),
                  ("n2", 1, TELEMETRY, 10.0, None, "mqtt", [(2, 0, 3)])],
                 {"n1": (10.0, "mqtt", 1)}) == {"n1": 3.71, "n2": 3.0}
    # a later batch with contact but no battery reading keeps the last value
    assert store([("n1", 2, TELEMETRY, 11.0, None, "mqtt", [(0, 0, 20.5)])],
                 {"n1": (11.0, "mqtt", 2), "n2": (11.0, "mqtt", 1)}) == {"n1": 3.71, "n2": 3.0}
    assert db.execute("SELECT last_seen FROM nodes WHERE id = 'n1'").fetchone()[0] == 11.0


def test_a_redelivered_frame_is_stored_once_beside_new_ones(db):
    """PostgreSQL tries a batch's frames as all new (a plain INSERT) and, when one was stored
    before, stores the batch again keeping only the new ones: nothing of the first try stays."""
    def store(seqs):
        batch = Batch()
        batch.new_nodes = [("n9", "mqtt", 1.0)]
        batch.frames = [("n9", s, TELEMETRY, 10.0 + s, None, "mqtt", [(0, 0, float(s))])
                        for s in seqs]
        batch.touch = {"n9": (10.0 + max(seqs), "mqtt", max(seqs))}
        return telemetry_store.store_batch(db, batch, TELEMETRY, proto.STATUS, proto.EVENT,
                                           proto.RESULT, proto.OTA_UP)

    assert store([1, 2, 3]) == 3
    assert store([3, 4, 2, 5]) == 2  # 2 and 3 redelivered (another worker's, or after a crash)
    assert store([4, 5]) == 0
    values = [r[0] for r in db.execute("SELECT value FROM readings WHERE node_id = 'n9'"
                                       " ORDER BY value").fetchall()]
    assert values == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert db.execute("SELECT up_seq FROM nodes WHERE id = 'n9'").fetchone()[0] == 5


def test_contacts_without_a_seq_or_a_battery_keep_the_stored_ones(db):
    # A conn "1" or a SenML pack is contact with no frame: no seq and no battery for any node of
    # the batch, whole columns of NULLs in PostgreSQL's one UPDATE from arrays.
    batch = Batch()
    batch.new_nodes = [("n1", "mqtt", 1.0), ("n2", "mqtt", 1.0)]
    batch.frames = [("n1", 7, TELEMETRY, 10.0, None, "mqtt", [(2, 0, 3.6)])]
    batch.touch = {"n1": (10.0, "mqtt", 7)}
    telemetry_store.store_batch(db, batch, TELEMETRY, proto.STATUS, proto.EVENT, proto.RESULT,
                                proto.OTA_UP)
    batch = Batch()
    batch.touch = {"n1": (20.0, "ttn", None), "n2": (21.0, "mqtt", None)}
    telemetry_store.store_batch(db, batch, TELEMETRY, proto.STATUS, proto.EVENT, proto.RESULT,
                                proto.OTA_UP)
    rows = db.execute("SELECT id, last_seen, online, provider, up_seq, battery FROM nodes"
                      " ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("n1", 20.0, 1, "ttn", 7, 3.6),
                                        ("n2", 21.0, 1, "mqtt", None, None)]
