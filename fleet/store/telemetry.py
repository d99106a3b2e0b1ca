"""What nodes send: frames, readings and latest values, STATUS history, events, bad frames, and
the ingest's batch that writes them all in one transaction."""

from contextlib import nullcontext

from .base import GREATEST, POSTGRESQL, TRUNCATE, BadFilter, IntegrityError, transaction
from .commands import recent_results
from .live import announce
from .nodes import get_node, readable
from .scope import scope_of


def latest_values(db, node_id: str) -> list[dict]:
    """The most recent value of each quantity and instance of a node."""
    return list(
        db.query(
            "SELECT qid, inst, t, value FROM latest WHERE node_id = ? ORDER BY qid, inst",
            [node_id],
        )
    )


def readings(db, node_id, since=None, until=None, qids=None, limit=1000) -> list[tuple]:
    """(t, qid, inst, value) of a node, newest `limit` in the window, returned oldest first."""
    sql = "SELECT t, qid, inst, value FROM readings WHERE node_id = ?"
    args: list = [node_id]
    if since is not None:
        sql += " AND t >= ?"
        args.append(since)
    if until is not None:
        sql += " AND t <= ?"
        args.append(until)
    if qids:
        sql += f" AND qid IN ({', '.join('?' * len(qids))})"
        args.extend(qids)
    sql += f" ORDER BY t DESC, {INSERTION_ORDER[db.dialect]} DESC LIMIT ?"
    args.append(limit)
    rows = db.conn.execute(sql, args).fetchall()
    rows.reverse()
    return rows


def count_readings(db, node_id=None) -> int:
    """Number of stored readings (of one node, or all)."""
    if node_id is None:
        return db.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    return db.conn.execute(
        "SELECT count(*) FROM readings WHERE node_id = ?", (node_id,)
    ).fetchone()[0]


def count_frames(db, node_id=None, direction="up") -> int:
    """Number of distinct frames stored (of one node, or all) in one direction."""
    if node_id is None:
        return db.conn.execute(
            "SELECT count(*) FROM frames WHERE direction = ?", (direction,)
        ).fetchone()[0]
    return db.conn.execute(
        "SELECT count(*) FROM frames WHERE node_id = ? AND direction = ?", (node_id, direction)
    ).fetchone()[0]


def frame_seqs(db, node_id, direction="up") -> list[int]:
    """The extended sequence numbers stored for a node, ascending."""
    return [
        r[0]
        for r in db.conn.execute(
            "SELECT seq FROM frames WHERE node_id = ? AND direction = ? ORDER BY seq",
            (node_id, direction),
        )
    ]


BAD_PAYLOAD_SHOWN = 64


def bad_frames(db, node_id=None, limit=100) -> list[dict]:
    """The most recent bad frames (of one node, or all), newest first.

    payload is at most the first BAD_PAYLOAD_SHOWN bytes (rows from before schema 17 may hold
    megabytes); size is what the whole payload had.
    """
    sql = ("SELECT id, node_id, received_at, provider, topic,"
           # substr() of an empty blob is NULL: the empty payload itself then.
           f" coalesce(substr(payload, 1, {BAD_PAYLOAD_SHOWN}), payload) AS payload,"
           " coalesce(size, length(payload)) AS size, error FROM bad_frames")
    args: list = []
    if node_id is not None:
        sql += " WHERE node_id = ?"
        args.append(node_id)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return list(db.query(sql, args))


def events(db, node_id, limit=50) -> list[dict]:
    """A node's most recent events, newest first."""
    return list(
        db.query(
            "SELECT t, received_at, code, value, text FROM events WHERE node_id = ?"
            " ORDER BY t DESC LIMIT ?",
            [node_id, limit],
        )
    )


def status_history(db, node_id, since, limit=500) -> list[dict]:
    """A node's STATUS reports since a time, newest first."""
    return list(db.query(
        "SELECT t, firmware_version, uptime, reset_cause, heap_free, rssi, queue, dropped, boots"
        " FROM status_log WHERE node_id = ? AND t >= ? ORDER BY t DESC LIMIT ?",
        [node_id, since, limit]))


def reading_buckets(db, node_id, qid, inst, since, until, buckets) -> list[tuple]:
    """(t, min, avg, max) of one quantity in `buckets` equal time slices, oldest first."""
    width = (until - since) / buckets
    return db.conn.execute(
        "SELECT min(t), min(value), avg(value), max(value) FROM readings"
        " WHERE node_id = ? AND qid = ? AND t >= ? AND t <= ? AND inst = ?"
        f" GROUP BY {TRUNCATE[db.dialect].format('(t - ?) / ?')} ORDER BY 1",
        (node_id, qid, since, until, inst, since, width)).fetchall()


def time_buckets(db, table, t, column, node_id, since, until, buckets) -> list[tuple]:
    """(t, min, avg, max) of a column of one node's rows with a value, in `buckets` equal slices
    of time column t, oldest first."""
    width = (until - since) / buckets
    return db.conn.execute(
        f"SELECT min({t}), min({column}), avg({column}), max({column}) FROM {table}"
        f" WHERE node_id = ? AND {t} >= ? AND {t} <= ? AND {column} IS NOT NULL"
        f" GROUP BY {TRUNCATE[db.dialect].format(f'({t} - ?) / ?')} ORDER BY 1",
        (node_id, since, until, since, width)).fetchall()


def status_buckets(db, node_id, column, since, until, buckets) -> list[tuple]:
    """(t, min, avg, max) of a STATUS column (rssi, heap_free, queue) in time slices."""
    if column not in ("rssi", "heap_free", "queue", "uptime", "dropped"):
        raise BadFilter(f"no status column {column!r}")
    return time_buckets(db, "status_log", "t", column, node_id, since, until, buckets)


def live_state(db, node_id) -> dict:
    """What the node page's live stream sends: node facts, latest values, command results."""
    node = get_node(db, node_id)
    return {
        "node": node,
        "latest": latest_values(db, node_id),
        "commands": recent_results(db, node_id),
    }


# --- ingest (hot path: keep per-row Python work small) -------------------------------------------


_INSERT_FRAME = (
    "INSERT INTO frames (node_id, direction, seq, type, received_at, device_ts, provider)"
    " VALUES (?, 'up', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


_INSERT_READING = "INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, ?, ?, ?, ?)"


_ADD_COUNTER = ("INSERT INTO ingest_counters (name, provider, value) VALUES (?, ?, ?)"
                " ON CONFLICT (name, provider) DO UPDATE SET value = ingest_counters.value"
                " + excluded.value")

_UPSERT_LATEST = (
    "INSERT INTO latest (node_id, qid, inst, t, value) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (node_id, qid, inst) DO UPDATE SET t = excluded.t, value = excluded.value"
    " WHERE excluded.t >= latest.t"
)


_UPSERT_LATEST_PG = (
    "INSERT INTO latest (node_id, qid, inst, t, value) SELECT * FROM"
    " unnest(?::text[], ?::bigint[], ?::bigint[], ?::float8[], ?::float8[])"
    " ON CONFLICT (node_id, qid, inst) DO UPDATE SET t = excluded.t, value = excluded.value"
    " WHERE excluded.t >= latest.t"
)

# The batch's contacts (store_batch): one row per node, as the executemany on SQLite.
_TOUCH_NODES_PG = (
    "UPDATE nodes SET last_seen = greatest(coalesce(nodes.last_seen, 0), u.seen), online = 1,"
    " provider = u.provider, up_seq = coalesce(greatest(nodes.up_seq, u.seq), nodes.up_seq, u.seq),"
    " battery = coalesce(u.battery, nodes.battery)"
    " FROM unnest(?::text[], ?::float8[], ?::text[], ?::bigint[], ?::float8[])"
    " AS u(id, seen, provider, seq, battery) WHERE nodes.id = u.id"
)


def _columns(rows, width: int, floats=()) -> list[list]:
    """Rows as `width` column lists, for unnest() of array parameters.

    The columns numbered in `floats` are made all float: psycopg sends a list of one type, and a
    decoded value or a device time may be an int.
    """
    if not rows:
        return [[] for _ in range(width)]
    cols = [list(c) for c in zip(*rows, strict=True)]
    for i in floats:
        cols[i] = [None if v is None else float(v) for v in cols[i]]
    return cols


def tune_for_bulk_writes(db):
    """Settings for the ingest's connection: it writes far more than anyone else."""
    if db.dialect == POSTGRESQL:
        # Nothing to tune per connection: synchronous_commit stays on, because a message is
        # acked once its batch commits and an acked message must survive a server crash.
        return
    # The default 2 MB page cache evicts the index pages every batch touches; 64 MB keeps them.
    db.conn.execute("PRAGMA cache_size = -65536")
    # Checkpoint every ~40 MB of WAL instead of ~4 MB: index pages rewritten by many batches
    # are copied back to the database file once instead of many times.
    db.conn.execute("PRAGMA wal_autocheckpoint = 10000")


class Batch:
    """Decoded uplinks of one ingest batch, written by store_batch in one transaction."""

    __slots__ = ("frames", "bad", "touch", "conn_state", "new_nodes", "restarts", "raw")

    def __init__(self):
        # (node, seq, mtype, received_at, ts, provider, body)
        self.frames: list[tuple] = []
        # (node or None, received_at, provider, topic, payload prefix, error, payload size)
        self.bad: list[tuple] = []
        # node -> (last_seen, provider, up_seq)
        self.touch: dict[str, tuple] = {}
        # node -> online flag, from the conn topic, in arrival order
        self.conn_state: dict[str, int] = {}
        # (node, provider, created)
        self.new_nodes: list[tuple] = []
        # events rows (node, t, received_at, code, value, text) for restarted seq counters
        self.restarts: list[tuple] = []
        # (node, seq) -> (topic, payload prefix, size) of RESULTs, a bad frame if unmatched
        self.raw: dict[tuple, tuple] = {}


# Ties of time broken by the order rows were written: SQLite's rowid, PostgreSQL's readings.id
# (migration 0029; a row address, ctid, is neither unique across partitions nor stable).
INSERTION_ORDER = {"sqlite": "rowid", POSTGRESQL: "id"}

# One statement for the whole batch; RETURNING says which (node, seq) were new. Two workers
# storing the same frame: the second waits on the unique key until the first commits, then skips.
_INSERT_FRAMES_PG = (
    "INSERT INTO frames (node_id, direction, seq, type, received_at, device_ts, provider)"
    " SELECT node_id, 'up', seq, type, received_at, device_ts, provider FROM unnest(?::text[],"
    " ?::bigint[], ?::bigint[], ?::float8[], ?::bigint[], ?::text[])"
    " AS f(node_id, seq, type, received_at, device_ts, provider)"
    " ON CONFLICT DO NOTHING RETURNING node_id, seq"
)
# A batch's first try: every frame new, appended by COPY. ON CONFLICT looks each key up before it
# inserts it, a second walk down the primary key per frame (~12 % of PostgreSQL's ingest time,
# docs/benchmarks.md), and its arrays cost the worker more than COPY's rows. A frame stored
# before (a redelivery, or twice in the batch) breaks the key: the batch is rolled back and
# stored again with _INSERT_FRAMES_PG (store_batch).
_FRAME_COLUMNS_PG = (("node_id", "direction", "seq", "type", "received_at", "device_ts",
                      "provider"), ("text", "text", "int8", "int8", "float8", "int8", "text"))


def _copy_new_frames_pg(conn, frames: list[tuple]) -> list[tuple]:
    """PostgreSQL: append frames all taken for new (IntegrityError if one is not); the frames."""
    rows = [(node, "up", seq, mtype, at, ts, provider)
            for node, seq, mtype, at, ts, provider, _body in frames]
    rows.sort(key=lambda r: (r[0], r[2]))  # in key order: see _lock_nodes
    conn.copy_rows("frames", *_FRAME_COLUMNS_PG, rows)
    return frames


def _insert_frames_pg(conn, frames: list[tuple]) -> list[tuple]:
    # in key order: see _lock_nodes
    columns = _columns(sorted((f[:6] for f in frames), key=lambda f: (f[0], f[1])), 6, (3,))
    new = set(conn.execute_binary(_INSERT_FRAMES_PG, columns).fetchall())
    fresh = []
    for f in frames:
        key = (f[0], f[1])
        if key in new:
            new.discard(key)  # the same frame twice in one batch is stored once
            fresh.append(f)
    return fresh


def _nodes_of(batch) -> set:
    """Every node whose row or page the batch changes."""
    nodes = {f[0] for f in batch.frames}
    nodes.update(batch.touch, batch.conn_state)
    nodes.update(b[0] for b in batch.bad if b[0] is not None)
    return nodes


def _lock_nodes(conn, nodes: set) -> None:
    """PostgreSQL: lock every node row the batch updates, in one order, before updating any.

    Workers then never wait on each other in a circle (a deadlock). The lock comes after the
    frames and readings, which two workers write side by side (taken first, it made every batch
    of the same nodes wait for the one before to commit): frames go in key order, so two batches
    holding the same frame (a redelivery) wait for its key in the same order, and the primary key
    decides (node, seq) once. A batch holding node locks is past its frames, so it never waits
    for a frame of a batch waiting for it. NO KEY UPDATE is the lock an UPDATE of non-key columns
    takes; it leaves a foreign key's check on the row free.
    """
    if nodes:
        # No fetch: the rows are locked when the statement runs, and a fetch would end the
        # pipeline's round trip here.
        conn.execute("SELECT 1 FROM nodes WHERE id = ANY(?) ORDER BY id FOR NO KEY UPDATE",
                     (sorted(nodes),))


# False sends store_batch's statements one round trip each (tests/bench/bench_store_batch.py
# measures both in one run).
PG_PIPELINE = True
# False sends a batch's contacts as one UPDATE per node, as on SQLite
# (tests/bench/bench_store_contacts.py measures both in one run).
PG_CONTACTS_AS_ARRAYS = True


def _pipelined(conn):
    """PostgreSQL's pipeline mode for the statements inside (psycopg 3); nothing on SQLite."""
    if conn.dialect == POSTGRESQL and PG_PIPELINE:
        return conn.raw.pipeline()
    return nullcontext()


def _insert_frames(conn, frames: list[tuple]) -> list[tuple]:
    """Insert frames, ignoring ones already stored; return the frames that were new."""
    if conn.dialect == POSTGRESQL:
        return _insert_frames_pg(conn, frames)
    # Duplicates are rare, so try the whole batch in one executemany and fall back to one
    # insert per frame (to learn which ones were new) only when the change count says some
    # were already there.
    conn.execute("SAVEPOINT frames")
    before = conn.total_changes
    conn.executemany(_INSERT_FRAME, [f[:6] for f in frames])
    if conn.total_changes - before == len(frames):
        conn.execute("RELEASE frames")
        return frames
    conn.execute("ROLLBACK TO frames")
    conn.execute("RELEASE frames")
    execute = conn.execute
    return [f for f in frames if execute(_INSERT_FRAME, f[:6]).rowcount == 1]


def store_batch(db, batch: Batch, telemetry, status, event, result, ota_up=None) -> int:
    """Write a batch in one transaction; return how many frames were new (not duplicates).

    telemetry/status/event/result/ota_up are the protocol's message type codes.
    """
    codes = (telemetry, status, event, result, ota_up)
    if db.dialect == POSTGRESQL:
        try:
            return _store_batch(db, batch, *codes, all_new=True)
        except IntegrityError as e:
            if getattr(e.diag, "constraint_name", None) != "frames_pkey":
                raise
            # Rolled back whole (nothing else of the batch was written before its frames):
            # again, keeping only the frames that are new.
    return _store_batch(db, batch, *codes)


def _store_batch(db, batch: Batch, telemetry, status, event, result, ota_up=None,
                 all_new=False) -> int:
    ota_rows = []
    trusts = {}
    readings_rows = []
    latest_rows = {}
    statuses = []
    events_rows = []
    results = []
    battery = {}
    # PostgreSQL: the statements go out in pipeline mode, so a batch costs about six round trips
    # (the frames' and the readings' COPY, two each; the rest; COMMIT) instead of one per
    # statement. Nothing reads a result but the frames' insert when it looks for stored ones.
    new_nodes = "INSERT INTO nodes (id, provider, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
    with transaction(db) as conn:
        if all_new:
            if batch.new_nodes:
                conn.executemany(new_nodes, sorted(batch.new_nodes))  # one round trip (psycopg)
            fresh = _copy_new_frames_pg(conn, batch.frames)  # COPY cannot run in a pipeline
        else:
            with _pipelined(conn):
                if batch.new_nodes:
                    conn.executemany(new_nodes, sorted(batch.new_nodes))
                fresh = _insert_frames(conn, batch.frames)
        new = len(fresh)
        for node, seq, mtype, received_at, ts, provider, body in fresh:
            t = received_at if ts is None else ts
            if mtype == telemetry:
                for qid, inst, value in body:
                    readings_rows.append((node, t, qid, inst, value))
                    latest_rows[(node, qid, inst)] = (node, qid, inst, t, value)
                    if qid == 2 and inst == 0:
                        battery[node] = value
            elif mtype == status:
                statuses.append(
                    (
                        body.get("fw"), body.get("uptime"), body.get("reset"),
                        body.get("heap_free"), body.get("rssi"), body.get("queue"),
                        body.get("dropped"), body.get("boots"), body.get("interval"),
                        body.get("micropython"), body.get("lost"), t, node,
                    )
                )
            elif mtype == event:
                events_rows.append(
                    (node, t, received_at, body.get("code"), body.get("value"), body.get("text"))
                )
            elif mtype == result:
                results.append(
                    (body.get("code"), body.get("value"), body.get("text"), received_at,
                     body.get("cid"), node, seq, provider)
                )
            elif mtype == ota_up:
                ota_rows.append((node, received_at, body.get("state"), body.get("version"),
                                 body.get("progress"), body.get("reason"), body.get("text"),
                                 body.get("rid")))
                if body.get("keys"):
                    trusts[node] = (body["keys"], node)
        if readings_rows and conn.dialect == POSTGRESQL:
            # COPY, between the two pipelines: it cannot run inside one (PgConnection.copy_rows)
            conn.copy_rows("readings", ("node_id", "t", "qid", "inst", "value"),
                           ("text", "float8", "int8", "int8", "float8"), readings_rows)
        with _pipelined(conn):
            if conn.dialect == POSTGRESQL:
                changed = _nodes_of(batch)
                _lock_nodes(conn, changed)
                # Delivered at commit to the live streams of these nodes in every web process.
                announce(conn, changed)
            if readings_rows:
                if conn.dialect == POSTGRESQL:
                    # One statement with arrays: executemany's per-row cost would be the batch's
                    # biggest on PostgreSQL (the readings are ~3 rows per message; a node's
                    # latest value one per quantity).
                    conn.execute_binary(_UPSERT_LATEST_PG,
                                        _columns(sorted(latest_rows.values()), 5, (3, 4)))
                else:
                    conn.executemany(_INSERT_READING, readings_rows)
                    conn.executemany(_UPSERT_LATEST, latest_rows.values())
            # A node's battery goes with its contact below: one new row version per node and
            # batch, not two (every indexed column changed makes a version in each index).
            no_contact = [(v, node) for node, v in battery.items() if node not in batch.touch]
            if no_contact:
                conn.executemany("UPDATE nodes SET battery = ? WHERE id = ?", no_contact)
            if statuses:
                conn.executemany(
                    # A field a STATUS leaves out keeps its last value (docs/protocol.md, STATUS):
                    # a compact STATUS must not blank what the full one after boot reported.
                    "UPDATE nodes SET firmware_version = coalesce(?, firmware_version),"
                    " uptime = ?, reset_cause = coalesce(?, reset_cause),"
                    " heap_free = coalesce(?, heap_free), rssi = coalesce(?, rssi),"
                    " queue = coalesce(?, queue), dropped = coalesce(?, dropped),"
                    " boots = coalesce(?, boots), interval = coalesce(?, interval),"
                    " micropython_version = coalesce(?, micropython_version),"
                    " lost = coalesce(?, lost), status_at = ?"
                    " WHERE id = ?",
                    statuses,
                )
                conn.executemany(
                    "INSERT INTO status_log (firmware_version, uptime, reset_cause, heap_free,"
                    " rssi, queue, dropped, boots, lost, t, node_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [st[:8] + st[10:] for st in statuses],
                )
            if ota_rows:
                conn.executemany(
                    "INSERT INTO ota_reports (node_id, t, state, version, progress, reason,"
                    " text, rid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    ota_rows,
                )
            if trusts:
                conn.executemany("UPDATE nodes SET ota_keys = ? WHERE id = ?", trusts.values())
            events_rows += batch.restarts
            if events_rows:
                conn.executemany(
                    "INSERT INTO events (node_id, t, received_at, code, value, text)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    events_rows,
                )
            bad = list(batch.bad)
            for row in results:
                if conn.execute(
                    "UPDATE commands SET result_code = ?, result_value = ?, result_text = ?,"
                    " result_at = ? WHERE id = ? AND node_id = ? RETURNING id",
                    row[:6],
                ).fetchone() is None:
                    # A RESULT for no command of ours (forged, or for another node's): shown and
                    # counted like any frame the fleet cannot use, never stored silently.
                    _code, _value, _text, received_at, cid, node, seq, provider = row
                    topic, payload, size = batch.raw.get((node, seq), (None, None, None))
                    bad.append((node, received_at, provider, topic, payload,
                                f"RESULT for command id {cid}, which the fleet never sent to"
                                f" {node}", size))
            if batch.touch and conn.dialect == POSTGRESQL and PG_CONTACTS_AS_ARRAYS:
                # One statement for the batch's contacts, not one per node: with thousands of
                # nodes a batch touches nearly a node per frame, and a statement per node made
                # storing a batch cost the worker 27 instead of 15 µs a message and its backend
                # 58 instead of 42 (10,000 nodes; docs/benchmarks.md, "Contacts in one
                # statement"). Its row locks are _lock_nodes', taken above in key order, so the
                # rows need no order of their own (the join's plan would not keep it anyway).
                rows = [(node, seen, prov, seq, battery.get(node))
                        for node, (seen, prov, seq) in batch.touch.items()]
                conn.execute_binary(_TOUCH_NODES_PG, _columns(rows, 5, (1, 4)))
            elif batch.touch:
                greatest = GREATEST[conn.dialect]
                conn.executemany(
                    f"UPDATE nodes SET last_seen = {greatest}(coalesce(last_seen, 0), ?),"
                    f" online = 1, provider = ?,"
                    f" up_seq = coalesce({greatest}(up_seq, ?), up_seq, ?),"
                    " battery = coalesce(?, battery) WHERE id = ?",
                    [(seen, prov, seq, seq, battery.get(node), node)
                     for node, (seen, prov, seq) in batch.touch.items()],
                )
            if batch.conn_state:
                conn.executemany(
                    "UPDATE nodes SET online = ? WHERE id = ?",
                    [(state, node) for node, state in batch.conn_state.items()],
                )
            if bad:
                conn.executemany(
                    "INSERT INTO bad_frames (node_id, received_at, provider, topic, payload, error,"
                    " size) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    bad,
                )
                counts: dict = {}
                for row in bad:
                    if row[0] is not None:
                        counts[row[0]] = counts.get(row[0], 0) + 1
                conn.executemany(
                    "UPDATE nodes SET bad_frames = bad_frames + ? WHERE id = ?",
                    [(n, node) for node, n in counts.items()],
                )
            counts = {"frames_stored": new, "frames_duplicate": len(batch.frames) - new,
                      "frames_bad": len(bad), "readings_stored": len(readings_rows)}
            provider = batch.frames[0][5] if batch.frames else (bad[0][2] if bad else None)
            conn.executemany(_ADD_COUNTER, [(name, provider or "", n)
                                            for name, n in counts.items() if n])

    return new


def ingest_counters(db) -> list[tuple]:
    """(name, provider, total) of the ingest's running totals (migration 0021): the whole
    platform's traffic, so only the platform operator's scope reads them."""
    if not scope_of(db).platform:
        return []
    return db.conn.execute(
        "SELECT name, provider, value FROM ingest_counters ORDER BY name, provider").fetchall()


def iter_readings(db, node_ids, since=None, until=None, batch=5000):
    """(node_id, t, qid, inst, value) of the nodes in [since, until], node by node, each
    quantity oldest first; a generator that holds at most `batch` rows at a time.

    Each batch is its own short query (keyset on t and the row's id along readings_node_qid_t:
    SQLite's rowid, PostgreSQL's readings.id), so a long download never keeps a read transaction
    open (which would stop WAL checkpoints, or VACUUM on PostgreSQL) and never sorts more than
    the ties of one time: the index already holds the order. On PostgreSQL a range of times
    reads only its days' partitions.

    Each node is read only if the connection's scope reads it when its turn comes: a node moved
    to another organisation (or no longer shared) during a long download is left out.
    """
    until = float("inf") if until is None else until
    row_id = INSERTION_ORDER[db.dialect]
    for node_id in node_ids:
        if not readable(db, node_id):
            continue
        qids = [r[0] for r in db.conn.execute(
            "SELECT DISTINCT qid FROM latest WHERE node_id = ? ORDER BY qid", (node_id,))]
        for qid in qids:
            lo, last_id = (float("-inf") if since is None else since), -1
            while True:
                rows = db.conn.execute(
                    f"SELECT t, inst, value, {row_id} FROM readings INDEXED BY"
                    " readings_node_qid_t WHERE node_id = ? AND qid = ? AND t >= ? AND t <= ?"
                    f" AND (t > ? OR {row_id} > ?) ORDER BY t, {row_id} LIMIT ?",
                    (node_id, qid, lo, until, lo, last_id, batch)).fetchall()
                for t, inst, value, _id in rows:
                    yield node_id, t, qid, inst, value
                if len(rows) < batch:
                    break
                lo, last_id = rows[-1][0], rows[-1][3]
