"""All SQL of the fleet: one SQLite file via sqlite-utils, its schema, migrations and queries."""

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager

import click
import sqlite_utils
from flask import current_app, g
from flask.cli import with_appcontext

from fleet.datadir import private_file


class StoreError(Exception):
    """The store cannot do what was asked."""


class UnknownNode(StoreError):
    """No node with that id is registered."""


class UnknownCommand(StoreError):
    """No command with that id exists for the node."""


class DuplicateName(StoreError):
    """A user or token with that name already exists."""


class AlreadyRegistered(StoreError):
    """The node already has active credentials (rotate or revoke them instead)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer fleet than this one."""


# Each migration moves the schema up by one version; PRAGMA user_version records where a file is.
# Never edit a released migration: add a new one, so old files upgrade the same way as fresh ones.
MIGRATIONS = [
    # 1: the registry and the telemetry store.
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        name TEXT,
        board TEXT,
        provider TEXT,
        firmware_version TEXT,
        last_seen REAL,
        online INTEGER NOT NULL DEFAULT 0,
        uptime INTEGER,
        reset_cause INTEGER,
        heap_free INTEGER,
        rssi INTEGER,
        queue INTEGER,
        dropped INTEGER,
        boots INTEGER,
        interval INTEGER,
        status_at REAL,
        battery REAL,
        up_seq INTEGER,
        down_seq INTEGER NOT NULL DEFAULT 0,
        bad_frames INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]'
    );
    -- The primary key is the dedupe key: one row per (node, direction, extended seq).
    CREATE TABLE frames (
        node_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type INTEGER NOT NULL,
        received_at REAL NOT NULL,
        device_ts INTEGER,
        provider TEXT,
        PRIMARY KEY (node_id, direction, seq)
    ) WITHOUT ROWID;
    CREATE TABLE readings (
        node_id TEXT NOT NULL,
        t REAL NOT NULL,
        qid INTEGER NOT NULL,
        inst INTEGER NOT NULL,
        value REAL NOT NULL
    );
    CREATE INDEX readings_node_qid_t ON readings (node_id, qid, t);
    CREATE TABLE bad_frames (
        id INTEGER PRIMARY KEY,
        node_id TEXT,
        received_at REAL NOT NULL,
        provider TEXT,
        topic TEXT,
        payload BLOB,
        error TEXT NOT NULL
    );
    CREATE INDEX bad_frames_node ON bad_frames (node_id, received_at);
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        cmd TEXT NOT NULL,
        arg INTEGER,
        created_by TEXT,
        created REAL NOT NULL,
        seq INTEGER,
        sent_at REAL,
        result_code INTEGER,
        result_value INTEGER,
        result_text TEXT,
        result_at REAL
    );
    CREATE INDEX commands_node ON commands (node_id, id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        t REAL NOT NULL,
        received_at REAL NOT NULL,
        code INTEGER,
        value INTEGER,
        text TEXT
    );
    CREATE INDEX events_node_t ON events (node_id, t);
    """,
    # 2: people and machines that may use the fleet, and what they did.
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'operator',
        created REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        last_used REAL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        t REAL NOT NULL,
        actor TEXT,
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT
    );
    """,
    # 3: latest value per node and quantity, so fleet pages never scan the readings.
    """
    CREATE TABLE latest (
        node_id TEXT NOT NULL,
        qid INTEGER NOT NULL,
        inst INTEGER NOT NULL,
        t REAL NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (node_id, qid, inst)
    ) WITHOUT ROWID;
    INSERT INTO latest (node_id, qid, inst, t, value)
        SELECT node_id, qid, inst, max(t), value FROM readings GROUP BY node_id, qid, inst;
    """,
    # 4: roles for API tokens (tokens made before had the operator's powers, and keep them);
    # audit log searchable by who and by what.
    """
    ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'operator';
    CREATE INDEX audit_actor ON audit (actor, id);
    CREATE INDEX audit_target ON audit (target, id);
    """,
    # 5: per-node identity minted at registration (provisioning): MQTT login (hash only),
    # LoRaWAN keys, trusted OTA keys, hardware id; revoked_at set means the broker refuses it.
    """
    CREATE TABLE node_credentials (
        node_id TEXT PRIMARY KEY,
        mqtt_user TEXT NOT NULL UNIQUE,
        mqtt_hash TEXT NOT NULL,
        dev_eui TEXT UNIQUE,
        join_eui TEXT,
        app_key TEXT,
        ota_keys TEXT NOT NULL DEFAULT '{}',
        mac TEXT UNIQUE,
        created REAL NOT NULL,
        created_by TEXT,
        revoked_at REAL,
        revoked_by TEXT
    );
    """,
    # 6: the web UI: node positions, status history, alerts, and indexes for the node list's
    # filters and sorts over 10,000 nodes.
    """
    ALTER TABLE nodes ADD COLUMN lat REAL;
    ALTER TABLE nodes ADD COLUMN lon REAL;
    ALTER TABLE nodes ADD COLUMN location TEXT;
    CREATE INDEX nodes_last_seen ON nodes (last_seen);
    CREATE INDEX nodes_provider ON nodes (provider, id);
    CREATE INDEX nodes_board ON nodes (board, id);
    CREATE INDEX nodes_firmware ON nodes (firmware_version, id);
    CREATE INDEX nodes_battery ON nodes (battery);
    CREATE TABLE status_log (
        node_id TEXT NOT NULL,
        t REAL NOT NULL,
        firmware_version TEXT,
        uptime INTEGER,
        reset_cause INTEGER,
        heap_free INTEGER,
        rssi INTEGER,
        queue INTEGER,
        dropped INTEGER,
        boots INTEGER
    );
    CREATE INDEX status_log_node_t ON status_log (node_id, t);
    CREATE INDEX status_log_t ON status_log (t);
    CREATE INDEX bad_frames_time ON bad_frames (received_at);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'open',
        opened REAL NOT NULL,
        detail TEXT,
        acked_by TEXT,
        acked_at REAL,
        resolved_by TEXT,
        resolved_at REAL
    );
    -- At most one unresolved alert of each kind per node.
    CREATE UNIQUE INDEX alerts_unresolved ON alerts (node_id, kind) WHERE state != 'resolved';
    CREATE INDEX alerts_state ON alerts (state, id);
    CREATE INDEX alerts_node ON alerts (node_id, id);
    """,
    # 7: the overview's counts read this narrow index instead of 10,000 wide node rows.
    """
    CREATE INDEX nodes_overview ON nodes
        (provider, board, firmware_version, online, last_seen, interval, id);
    """,
    # 8: zero-touch claims: claim tokens (limited uses and time; only the secret's hash) and
    # the claims boards made with them, waiting for approval or issued.
    """
    CREATE TABLE claim_tokens (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        board TEXT NOT NULL,
        max_uses INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0,
        expires REAL NOT NULL,
        auto_approve INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        created_by TEXT,
        revoked_at REAL
    );
    CREATE TABLE claims (
        id INTEGER PRIMARY KEY,
        token_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        mac TEXT NOT NULL UNIQUE,
        board TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        node_id TEXT,
        requested_at REAL NOT NULL,
        decided_at REAL,
        decided_by TEXT,
        reason TEXT
    );
    """,
    # 9: OTA: releases, the state reports nodes send (OTA_UP), rollouts and their nodes.
    """
    CREATE TABLE releases (
        version TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        boards TEXT NOT NULL,
        micropython TEXT,
        files INTEGER NOT NULL,
        size INTEGER NOT NULL,
        manifest_sha TEXT NOT NULL,
        created REAL NOT NULL,
        created_by TEXT
    );
    CREATE TABLE ota_reports (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        t REAL NOT NULL,
        state INTEGER NOT NULL,
        version TEXT NOT NULL,
        progress INTEGER,
        reason INTEGER,
        text TEXT,
        rid INTEGER
    );
    CREATE INDEX ota_reports_node ON ota_reports (node_id, id);
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        release TEXT NOT NULL REFERENCES releases (version),
        state TEXT NOT NULL,
        stages TEXT NOT NULL,
        stage INTEGER NOT NULL DEFAULT 0,
        stage_started REAL,
        max_failures REAL NOT NULL,
        max_health_drop REAL NOT NULL,
        target TEXT NOT NULL,
        reason TEXT,
        report_id INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        created_by TEXT,
        updated REAL NOT NULL
    );
    CREATE TABLE rollout_nodes (
        rollout_id INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        stage INTEGER NOT NULL,
        state TEXT NOT NULL,
        from_version TEXT,
        offered_at REAL,
        progress INTEGER,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated REAL NOT NULL,
        PRIMARY KEY (rollout_id, node_id)
    ) WITHOUT ROWID;
    CREATE INDEX rollout_nodes_node ON rollout_nodes (node_id);
    """,
    # 10: alert evaluation reads the last hour of STATUS reports from this covering index alone.
    """
    DROP INDEX status_log_t;
    CREATE INDEX status_log_t_boots ON status_log (t, node_id, boots);
    """,
    # 11: LoRaWAN providers (The Things Stack, ChirpStack) with their password encrypted at rest,
    # the transport identities a node has on them, radio metadata of every reception of an
    # uplink (a frame heard on two providers is stored once, with both receptions), and the
    # downlinks sent through a provider (its daily budget).
    """
    CREATE TABLE providers (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        tls INTEGER NOT NULL DEFAULT 0,
        application TEXT NOT NULL,
        tenant TEXT,
        username TEXT,
        secret BLOB,
        downlinks_per_day INTEGER NOT NULL DEFAULT 10,
        created REAL NOT NULL
    );
    CREATE TABLE transport_ids (
        provider TEXT NOT NULL,
        ext_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        device_id TEXT,
        last_seen REAL,
        last_dr INTEGER,
        PRIMARY KEY (provider, ext_id)
    );
    CREATE INDEX transport_ids_node ON transport_ids (node_id);
    CREATE TABLE receptions (
        node_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        provider TEXT NOT NULL,
        received_at REAL NOT NULL,
        gateway TEXT,
        rssi REAL,
        snr REAL,
        sf INTEGER,
        dr INTEGER,
        freq INTEGER,
        airtime REAL,
        fcnt INTEGER
    );
    CREATE INDEX receptions_node ON receptions (node_id, received_at);
    CREATE INDEX receptions_seq ON receptions (node_id, seq);
    CREATE TABLE provider_downlinks (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        t REAL NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE INDEX provider_downlinks_node ON provider_downlinks (node_id, provider, t);
    """,
    # 12: when the periodic work (fleet/upkeep.py) last ran each task, so pages can say how
    # fresh the alerts are without evaluating them inside a GET.
    """
    CREATE TABLE upkeep (
        task TEXT PRIMARY KEY,
        at REAL NOT NULL,
        detail TEXT
    );
    """,
    # 13: the fields a CONFIG downlink set (JSON), so the node page and the audit log show all of
    # them, not only the interval kept in `arg`.
    """
    ALTER TABLE commands ADD COLUMN body TEXT;
    """,
    # 14: the MicroPython a node runs (STATUS field 10, sent after boot) and the one a release's
    # runtime image carries, so rollouts count a runtime update only once the node runs it; the
    # overview's covering index gains the column it now counts by.
    """
    ALTER TABLE nodes ADD COLUMN micropython_version TEXT;
    ALTER TABLE releases ADD COLUMN runtime_micropython TEXT;
    CREATE INDEX nodes_micropython ON nodes (micropython_version, id);
    DROP INDEX nodes_overview;
    CREATE INDEX nodes_overview ON nodes
        (provider, board, firmware_version, micropython_version, online, last_seen, interval, id);
    """,
    # 15: the ids of the update keys a node said it trusts when it last confirmed an update
    # (OTA_UP `keys`, comma-separated); NULL: as provisioned (node_credentials.ota_keys).
    """
    ALTER TABLE nodes ADD COLUMN ota_keys TEXT;
    """,
    # 16: the network's ACKs of confirmed uplinks are downlinks too and use the same daily
    # budget (TTN fair use): one row per acknowledged uplink (kind 'ack'), at most one per
    # (node, provider, seq, FCnt) however many gateways or MQTT redeliveries brought it.
    """
    ALTER TABLE provider_downlinks ADD COLUMN kind TEXT NOT NULL DEFAULT 'fleet';
    ALTER TABLE provider_downlinks ADD COLUMN seq INTEGER;
    ALTER TABLE provider_downlinks ADD COLUMN fcnt INTEGER;
    CREATE UNIQUE INDEX provider_downlinks_ack ON provider_downlinks (node_id, provider, seq, fcnt)
        WHERE kind = 'ack';
    """,
    # 17: a bad frame keeps only a prefix of its payload (ingest.BAD_PAYLOAD_KEPT) and the size
    # it had; NULL for rows stored whole before this version.
    """
    ALTER TABLE bad_frames ADD COLUMN size INTEGER;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def valid_node_id(node_id: str) -> bool:
    """True if node_id matches [a-z0-9-]{1,32} (the MQTT topic segment of a node)."""
    return 0 < len(node_id) <= 32 and NODE_ID_CHARS.issuperset(node_id)


def connect(path) -> sqlite_utils.Database:
    """Open the fleet database in WAL mode with autocommit; transactions are explicit."""
    path = private_file(path)  # it holds AppKeys and password hashes
    # isolation_level=None: sqlite3 must not open transactions behind our back, because the
    # ingest worker wants exactly one BEGIN IMMEDIATE ... COMMIT per batch.
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash; only a power cut can lose the last commits.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return sqlite_utils.Database(conn)


@contextmanager
def transaction(db: sqlite_utils.Database):
    """One write transaction: commit on success, roll back on any error."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db.conn
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def schema_version(db) -> int:
    """The schema version recorded in the file (0 for an empty file)."""
    return db.conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(db, target: int | None = None) -> tuple[int, int]:
    """Apply pending migrations in order up to target; return (version before, version after)."""
    target = SCHEMA_VERSION if target is None else target
    before = schema_version(db)
    if before > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema is version {before}, this fleet knows up to {SCHEMA_VERSION}"
        )
    for version in range(before + 1, target + 1):
        with transaction(db) as conn:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return before, max(before, target)


def _statements(script: str):
    # executescript() would COMMIT our transaction first; split so a migration is all-or-nothing.
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    buf = ""
    for piece in "\n".join(lines).split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf
            buf = ""


def open_db(path) -> sqlite_utils.Database:
    """Connect and bring the schema up to date."""
    db = connect(path)
    migrate(db)
    return db


# --- Flask integration ---------------------------------------------------------------------------


def get_db() -> sqlite_utils.Database:
    """The request's database connection, opened on first use."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def close_db(e=None):
    """Close the request's connection, if one was opened."""
    db = g.pop("db", None)
    if db is not None:
        db.conn.close()


@click.command("migrate")
@with_appcontext
def migrate_command():
    """Bring the database schema up to date.

    Example: flask --app fleet db migrate
    """
    db = connect(current_app.config["DATABASE"])
    try:
        before, after = migrate(db)
    except SchemaTooNew as e:
        raise click.ClickException(str(e)) from None
    finally:
        db.conn.close()
    click.echo(f"schema version {before} -> {after}")


def init_app(app):
    """Register teardown and the `db migrate` command; migrate the database once at start."""
    app.teardown_appcontext(close_db)
    group = click.Group("db", help="Database commands.")
    group.add_command(migrate_command)
    app.cli.add_command(group)
    db = open_db(app.config["DATABASE"])
    db.conn.close()


# --- nodes ---------------------------------------------------------------------------------------

NODE_COLUMNS = (
    "id, name, board, provider, firmware_version, micropython_version, last_seen, online, uptime,"
    " reset_cause, heap_free, rssi, queue, dropped, boots, interval, status_at, battery,"
    " bad_frames, created, tags"
)


def _node_dict(row: dict) -> dict:
    row["online"] = bool(row["online"])
    row["tags"] = json.loads(row["tags"] or "[]")
    return row


def list_nodes(db) -> list[dict]:
    """Every registered node, ordered by id."""
    rows = db.query(f"SELECT {NODE_COLUMNS} FROM nodes ORDER BY id")
    return [_node_dict(r) for r in rows]


def get_node(db, node_id: str) -> dict:
    """One node; raise UnknownNode if it is not registered."""
    rows = list(db.query(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?", [node_id]))
    if not rows:
        raise UnknownNode(f"unknown node {node_id!r}")
    return _node_dict(rows[0])


def enrol_node(db, node_id: str, name=None, board=None, provider=None, tags=()):
    """Register a node (idempotent); used by provisioning and by first contact."""
    with transaction(db) as conn:
        conn.execute(
            "INSERT OR IGNORE INTO nodes (id, name, board, provider, created, tags)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (node_id, name, board, provider, time.time(), json.dumps(list(tags))),
        )


def rename_node(db, node_id: str, name: str):
    """Set a node's display name."""
    get_node(db, node_id)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET name = ? WHERE id = ?", (name, node_id))


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
    sql += " ORDER BY t DESC, rowid DESC LIMIT ?"
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


# --- web UI: node list, overview, positions, status history, charts, alerts ----------------------

# A node counts as online while its broker session is up (conn 1) and it was heard within three
# reporting intervals plus a minute; LoRaWAN nodes have no session flag, so the time rule matters.
OFFLINE_INTERVALS = 3
OFFLINE_GRACE = 60
DEFAULT_INTERVAL = 60
_ALLOWANCE = f"({OFFLINE_INTERVALS} * coalesce(interval, {DEFAULT_INTERVAL}) + {OFFLINE_GRACE})"
STATUS_SQL = (
    "CASE WHEN last_seen IS NULL THEN 'new'"
    f" WHEN online = 1 AND last_seen >= :now - {_ALLOWANCE} THEN 'online' ELSE 'offline' END"
)
ALERTING_SQL = "id IN (SELECT node_id FROM alerts WHERE state != 'resolved')"
BATTERY_LOW = 3.4  # V: below it an alert opens
BATTERY_OK = 3.5  # V: at or above it the alert resolves itself (hysteresis, no flapping)
BOOT_LOOP_BOOTS = 3  # boots within BOOT_LOOP_WINDOW seconds
BOOT_LOOP_WINDOW = 3600
BAD_FRAMES_WINDOW = 3600
UPDATE_FAILED_WINDOW = 7 * 86400
ALERT_KINDS = ("offline", "battery_low", "boot_loop", "bad_frames", "update_failed")

# Sort keys of the node list -> SQL; every one is backed by an index or is cheap on 10,000 rows.
NODE_SORTS = {
    "id": "id",
    "name": "coalesce(name, id)",
    "last_seen": "last_seen",
    "battery": "battery",
    "firmware": "firmware_version",
    "micropython": "micropython_version",
    "provider": "provider",
    "rssi": "rssi",
}
SEEN_WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
# Node list filters that match one column exactly (menus of the values present), each indexed.
FACETS = (("provider", "provider"), ("board", "board"), ("firmware", "firmware_version"),
          ("micropython", "micropython_version"))


class BadFilter(StoreError, ValueError):
    """A node list filter or sort that does not exist."""


class UnknownAlert(StoreError):
    """No alert with that id exists."""


class AlertResolved(StoreError):
    """The alert is already resolved; it cannot be acknowledged or resolved again."""


def _node_where(f: dict, now: float) -> tuple[str, dict]:
    """WHERE clause and parameters for the node list's filters (all optional, ANDed)."""
    where, args = ["1"], {"now": now}
    q = (f.get("q") or "").strip()
    if q:
        args["q"] = q
        args["like"] = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(
            "(id LIKE :like ESCAPE '\\' OR name LIKE :like ESCAPE '\\'"
            " OR location LIKE :like ESCAPE '\\'"
            " OR EXISTS (SELECT 1 FROM json_each(nodes.tags) WHERE value = :q))"
        )
    status = f.get("status")
    if status == "alerting":
        where.append(ALERTING_SQL)
    elif status in ("online", "offline", "new"):
        where.append(f"{STATUS_SQL} = :status")
        args["status"] = status
    elif status:
        raise BadFilter(f"status {status!r}: expected online, offline, new or alerting")
    for key, column in FACETS:
        if f.get(key):
            where.append(f"{column} = :{key}")
            args[key] = f[key]
    if f.get("tag"):
        where.append("EXISTS (SELECT 1 FROM json_each(nodes.tags) WHERE value = :tag)")
        args["tag"] = f["tag"]
    battery = f.get("battery")
    if battery == "low":
        where.append(f"battery < {BATTERY_LOW}")
    elif battery == "ok":
        where.append(f"battery >= {BATTERY_LOW}")
    elif battery == "unknown":
        where.append("battery IS NULL")
    elif battery:
        raise BadFilter(f"battery {battery!r}: expected low, ok or unknown")
    seen = f.get("seen")
    if seen in SEEN_WINDOWS:
        where.append("last_seen >= :seen_since")
        args["seen_since"] = now - SEEN_WINDOWS[seen]
    elif seen == "older":
        where.append("last_seen < :seen_since")
        args["seen_since"] = now - SEEN_WINDOWS["7d"]
    elif seen == "never":
        where.append("last_seen IS NULL")
    elif seen:
        raise BadFilter(f"seen {seen!r}: expected 1h, 24h, 7d, older or never")
    return " AND ".join(where), args


def query_nodes(db, filters: dict, sort="id", desc=False, offset=0, limit=50,
                now=None) -> tuple[list[dict], int]:
    """One page of nodes matching the filters, in order, and how many match in all."""
    if sort not in NODE_SORTS:
        raise BadFilter(f"sort {sort!r}: expected one of {', '.join(NODE_SORTS)}")
    now = time.time() if now is None else now
    where, args = _node_where(filters, now)
    total = db.conn.execute(f"SELECT count(*) FROM nodes WHERE {where}", args).fetchone()[0]
    order = NODE_SORTS[sort] + (" DESC" if desc else "")
    # NULLs (never seen, no battery) go last either way; id breaks ties so pages are stable.
    rows = list(db.query(
        f"SELECT {NODE_COLUMNS}, location, lat, lon, {STATUS_SQL} AS status FROM nodes"
        f" WHERE {where} ORDER BY {NODE_SORTS[sort]} IS NULL, {order}, id"
        " LIMIT :limit OFFSET :offset",
        dict(args, limit=limit, offset=offset),
    ))
    if rows:
        ids = [r["id"] for r in rows]
        counts = dict(db.conn.execute(
            "SELECT node_id, count(*) FROM alerts WHERE state != 'resolved' AND node_id IN"
            f" ({', '.join('?' * len(ids))}) GROUP BY node_id", ids))
        for r in rows:
            _node_dict(r)
            r["alerts"] = counts.get(r["id"], 0)
    return rows, total


def matching_node_ids(db, filters: dict, now=None) -> list[str]:
    """Ids of every node matching the filters (for bulk actions on a whole result)."""
    where, args = _node_where(filters, time.time() if now is None else now)
    return [r[0] for r in db.conn.execute(f"SELECT id FROM nodes WHERE {where}", args)]


def facets(db) -> dict[str, list[str]]:
    """The providers, boards, firmware and MicroPython versions present, for the filter menus."""
    out = {}
    for key, column in FACETS:
        out[key] = [r[0] for r in db.conn.execute(
            f"SELECT DISTINCT {column} FROM nodes WHERE {column} IS NOT NULL ORDER BY 1")]
    return out


def overview(db, now=None) -> dict:
    """Node counts (total/online/offline/new/alerting) in all and by provider, board, firmware
    and MicroPython version."""
    now = time.time() if now is None else now
    # Two grouped scans (statuses over the covering index nodes_overview; alerting nodes from
    # the unresolved alerts) cost about half of one scan that probes the alerts for every node.
    rows = db.conn.execute(
        f"SELECT provider, board, firmware_version, micropython_version, {STATUS_SQL}, count(*)"
        " FROM nodes GROUP BY 1, 2, 3, 4, 5", {"now": now}).fetchall()
    alerting = db.conn.execute(
        "SELECT n.provider, n.board, n.firmware_version, n.micropython_version,"
        " count(DISTINCT n.id) FROM alerts a JOIN nodes n ON n.id = a.node_id"
        " WHERE a.state != 'resolved' GROUP BY 1, 2, 3, 4"
    ).fetchall()
    empty = {"total": 0, "online": 0, "offline": 0, "new": 0, "alerting": 0}
    out: dict = {"all": dict(empty), "provider": {}, "board": {}, "firmware": {},
                 "micropython": {}}
    keys = ("provider", "board", "firmware", "micropython")

    def groups(values):
        yield out["all"]
        for key, value in zip(keys, values, strict=True):
            yield out[key].setdefault(value or "-", dict(empty))

    for *values, status, n in rows:
        for group in groups(values):
            group["total"] += n
            group[status] += n
    for *values, n in alerting:
        for group in groups(values):
            group["alerting"] += n
    return out


def node_status(db, node_id, now=None) -> str:
    """online, offline or new, by the same rule as the lists."""
    row = db.conn.execute(f"SELECT {STATUS_SQL} FROM nodes WHERE id = :id",
                          {"now": time.time() if now is None else now, "id": node_id}).fetchone()
    if row is None:
        raise UnknownNode(f"unknown node {node_id!r}")
    return row[0]


def node_place(db, node_id) -> dict:
    """A node's position: lat, lon (WGS84 degrees) and a free-text location."""
    row = db.conn.execute("SELECT lat, lon, location FROM nodes WHERE id = ?",
                          (node_id,)).fetchone()
    if row is None:
        raise UnknownNode(f"unknown node {node_id!r}")
    return {"lat": row[0], "lon": row[1], "location": row[2]}


def set_place(db, node_id, lat, lon, location, actor=None):
    """Set a node's position and location text (None clears); audited."""
    get_node(db, node_id)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET lat = ?, lon = ?, location = ? WHERE id = ?",
                     (lat, lon, location, node_id))
        conn.execute(
            "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, "node.place", node_id,
             json.dumps({"lat": lat, "lon": lon, "location": location})))


def set_name_and_tags(db, node_id, name, tags, actor=None):
    """Set a node's display name and tags; audited."""
    get_node(db, node_id)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET name = ?, tags = ? WHERE id = ?",
                     (name, json.dumps(list(tags)), node_id))
        conn.execute(
            "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, "node.edit", node_id, json.dumps({"name": name,
                                                                   "tags": list(tags)})))


def tag_nodes(db, node_ids, tag, remove=False, actor=None) -> int:
    """Add (or remove) one tag on many nodes in one transaction; return how many changed."""
    if remove:
        sql = ("UPDATE nodes SET tags = (SELECT json_group_array(value) FROM json_each(nodes.tags)"
               " WHERE value != :tag) WHERE id = :id"
               " AND EXISTS (SELECT 1 FROM json_each(nodes.tags) WHERE value = :tag)")
    else:
        sql = ("UPDATE nodes SET tags = json_insert(tags, '$[#]', :tag) WHERE id = :id"
               " AND NOT EXISTS (SELECT 1 FROM json_each(nodes.tags) WHERE value = :tag)")
    with transaction(db) as conn:
        before = conn.total_changes
        conn.executemany(sql, [{"tag": tag, "id": i} for i in node_ids])
        changed = conn.total_changes - before
        conn.execute(
            "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, "bulk.untag" if remove else "bulk.tag", tag,
             json.dumps({"nodes": len(node_ids), "changed": changed})))
    return changed


def positions(db, now=None) -> list[dict]:
    """Every node with a position: id, name, lat, lon, status (alerting wins over the rest)."""
    rows = db.conn.execute(
        f"SELECT id, name, lat, lon, CASE WHEN {ALERTING_SQL} THEN 'alerting' ELSE {STATUS_SQL}"
        " END FROM nodes WHERE lat IS NOT NULL AND lon IS NOT NULL",
        {"now": time.time() if now is None else now})
    return [{"id": r[0], "name": r[1], "lat": r[2], "lon": r[3], "status": r[4]} for r in rows]


def position_bounds(db) -> tuple:
    """(count, min lat, max lat, min lon, max lon) of the nodes that have a position."""
    return db.conn.execute(
        "SELECT count(*), min(lat), max(lat), min(lon), max(lon) FROM nodes"
        " WHERE lat IS NOT NULL AND lon IS NOT NULL").fetchone()


def position_cells(db, lat1, lon0, kx, span, cells, now=None) -> list[tuple]:
    """(column, row, count, worst status rank) of positioned nodes binned on a cells x cells grid.

    Columns grow east from lon0, rows grow south from lat1; span is the side in degrees of
    latitude, kx the cosine correction for longitude. Rank: 0 new, 1 online, 2 offline, 3 alerting.
    """
    rank = (f"CASE WHEN {ALERTING_SQL} THEN 3 ELSE CASE {STATUS_SQL} WHEN 'new' THEN 0"
            " WHEN 'online' THEN 1 ELSE 2 END END")
    return db.conn.execute(
        "SELECT min(CAST((lon - :lon0) * :kx / :span * :cells AS INTEGER), :cells - 1),"
        " min(CAST((:lat1 - lat) / :span * :cells AS INTEGER), :cells - 1),"
        f" count(*), max({rank}) FROM nodes WHERE lat IS NOT NULL AND lon IS NOT NULL"
        " GROUP BY 1, 2",
        {"lon0": lon0, "lat1": lat1, "kx": kx, "span": span, "cells": cells,
         "now": time.time() if now is None else now}).fetchall()


def count_nodes(db) -> int:
    """How many nodes are registered."""
    return db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]


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
        " GROUP BY CAST((t - ?) / ? AS INTEGER) ORDER BY 1",
        (node_id, qid, since, until, inst, since, width)).fetchall()


def status_buckets(db, node_id, column, since, until, buckets) -> list[tuple]:
    """(t, min, avg, max) of a STATUS column (rssi, heap_free, queue) in time slices."""
    if column not in ("rssi", "heap_free", "queue", "uptime", "dropped"):
        raise BadFilter(f"no status column {column!r}")
    width = (until - since) / buckets
    return db.conn.execute(
        f"SELECT min(t), min({column}), avg({column}), max({column}) FROM status_log"
        f" WHERE node_id = ? AND t >= ? AND t <= ? AND {column} IS NOT NULL"
        " GROUP BY CAST((t - ?) / ? AS INTEGER) ORDER BY 1",
        (node_id, since, until, since, width)).fetchall()


def node_updates(db, node_id, limit=10) -> dict:
    """A node's newest OTA reports and the rollouts it is or was in, newest first."""
    return {
        "reports": list(db.query(
            "SELECT t, state, version, progress, reason, text, rid FROM ota_reports"
            " WHERE node_id = ? ORDER BY id DESC LIMIT ?", [node_id, limit])),
        "rollouts": list(db.query(
            "SELECT r.id, r.release, r.state AS rollout_state, rn.state, rn.from_version,"
            " rn.reason, rn.updated FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id"
            " WHERE rn.node_id = ? ORDER BY r.id DESC LIMIT ?", [node_id, limit])),
        "keys": trusted_key_ids(db, [node_id]).get(node_id),
    }


def rollouts_in_progress(db) -> list[dict]:
    """Running and paused rollouts with their node counts by state, newest first."""
    out = list(db.query(
        "SELECT id, release, state, stage, stages, created, created_by FROM rollouts"
        " WHERE state IN ('running', 'paused') ORDER BY id DESC"))
    for r in out:
        r["stages"] = len(json.loads(r["stages"]))
        r["counts"] = dict(db.conn.execute(
            "SELECT state, count(*) FROM rollout_nodes WHERE rollout_id = ? GROUP BY state",
            (r["id"],)).fetchall())
        r["total"] = sum(r["counts"].values())
    return out


def reception_buckets(db, node_id, column, since, until, buckets) -> list[tuple]:
    """(t, min, avg, max) of LoRaWAN rssi or snr over all gateways and providers, in slices."""
    if column not in ("rssi", "snr"):
        raise BadFilter(f"no reception column {column!r}")
    width = (until - since) / buckets
    return db.conn.execute(
        f"SELECT min(received_at), min({column}), avg({column}), max({column}) FROM receptions"
        f" WHERE node_id = ? AND received_at >= ? AND received_at <= ? AND {column} IS NOT NULL"
        " GROUP BY CAST((received_at - ?) / ? AS INTEGER) ORDER BY 1",
        (node_id, since, until, since, width)).fetchall()


def has_receptions(db, node_id) -> bool:
    """True if a LoRaWAN provider ever reported radio metadata for the node."""
    return db.conn.execute("SELECT 1 FROM receptions WHERE node_id = ? LIMIT 1",
                           (node_id,)).fetchone() is not None


def live_state(db, node_id) -> dict:
    """What the node page's live stream sends: node facts, latest values, command results."""
    node = get_node(db, node_id)
    return {
        "node": node,
        "latest": latest_values(db, node_id),
        "commands": list(db.query(
            "SELECT id, result_code, result_value, result_text, result_at, sent_at FROM commands"
            " WHERE node_id = ? ORDER BY id DESC LIMIT 20", [node_id])),
    }


def evaluate_alerts(db, now=None) -> dict[str, int]:
    """Open alerts whose condition holds, resolve those whose condition cleared; counts opened."""
    now = time.time() if now is None else now
    offline = f"last_seen IS NOT NULL AND (online = 0 OR last_seen < :now - {_ALLOWANCE})"
    # Per kind: the rows to open (node, kind, detail) and, over the alerts table, when an
    # unresolved alert of that kind has cleared. Clears are correlated on the alert's node, so
    # they look only at nodes that have an unresolved alert.
    # INDEXED BY: with ANALYZE statistics the planner prefers a skip-scan of status_log_node_t,
    # about 100 times slower than this range scan of the last hour.
    boot_loop = (
        "SELECT node_id FROM status_log INDEXED BY status_log_t_boots"
        f" WHERE t >= :now - {BOOT_LOOP_WINDOW} GROUP BY node_id"
        f" HAVING max(boots) - min(boots) >= {BOOT_LOOP_BOOTS}"
    )
    conditions = {
        "offline": (
            f"SELECT id, 'offline', 'no contact since ' || datetime(last_seen, 'unixepoch')"
            f" || ' UTC; reports every ' || coalesce(interval, {DEFAULT_INTERVAL}) || ' s'"
            f" FROM nodes WHERE {offline}",
            f"EXISTS (SELECT 1 FROM nodes WHERE nodes.id = alerts.node_id AND NOT ({offline}))",
        ),
        "battery_low": (
            f"SELECT id, 'battery_low', 'battery ' || round(battery, 2) || ' V'"
            f" FROM nodes WHERE battery < {BATTERY_LOW}",
            "EXISTS (SELECT 1 FROM nodes WHERE nodes.id = alerts.node_id"
            f" AND (battery IS NULL OR battery >= {BATTERY_OK}))",
        ),
        "boot_loop": (
            "SELECT node_id, 'boot_loop', (max(boots) - min(boots)) || ' boots in the last '"
            f" || {BOOT_LOOP_WINDOW // 60} || ' min' FROM status_log INDEXED BY"
            f" status_log_t_boots WHERE t >= :now - {BOOT_LOOP_WINDOW} GROUP BY node_id"
            f" HAVING max(boots) - min(boots) >= {BOOT_LOOP_BOOTS}",
            f"node_id NOT IN ({boot_loop})",
        ),
        # A node whose update failed or rolled back in a rollout of the last week; it clears
        # when a later rollout of that node succeeds (or by hand).
        "update_failed": (
            "SELECT rn.node_id, 'update_failed', 'update to ' || r.release || ' '"
            " || replace(rn.state, '_', ' ') || coalesce(': ' || rn.reason, '')"
            " FROM rollouts r JOIN rollout_nodes rn ON rn.rollout_id = r.id"
            f" WHERE r.updated >= :now - {UPDATE_FAILED_WINDOW}"
            " AND rn.state IN ('failed', 'rolled_back') AND NOT EXISTS (SELECT 1 FROM"
            " rollout_nodes s WHERE s.node_id = rn.node_id AND s.state = 'succeeded'"
            " AND s.updated > rn.updated) GROUP BY rn.node_id",
            "EXISTS (SELECT 1 FROM rollout_nodes WHERE rollout_nodes.node_id = alerts.node_id"
            " AND state = 'succeeded' AND updated > alerts.opened)",
        ),
        "bad_frames": (
            "SELECT node_id, 'bad_frames', count(*) || ' bad frames in the last hour'"
            f" FROM bad_frames WHERE received_at >= :now - {BAD_FRAMES_WINDOW}"
            " AND node_id IS NOT NULL GROUP BY node_id",
            f"node_id NOT IN (SELECT node_id FROM bad_frames WHERE received_at >= :now -"
            f" {BAD_FRAMES_WINDOW} AND node_id IS NOT NULL)",
        ),
    }
    opened = {}
    with transaction(db) as conn:
        for kind, (open_sql, clear_sql) in conditions.items():
            conn.execute(
                "UPDATE alerts SET state = 'resolved', resolved_by = 'auto', resolved_at = :now"
                f" WHERE kind = '{kind}' AND state != 'resolved' AND {clear_sql}",
                {"now": now})
            before = conn.total_changes
            # The partial unique index keeps one unresolved alert per node and kind.
            conn.execute(
                "INSERT OR IGNORE INTO alerts (node_id, kind, detail, opened)"
                f" SELECT *, :now FROM ({open_sql})", {"now": now})
            opened[kind] = conn.total_changes - before
    return opened


def mark_upkeep(db, task: str, at: float, detail=None) -> None:
    """Record that a periodic task (alerts, prune, broker) ran at `at`."""
    with transaction(db) as conn:
        conn.execute("INSERT INTO upkeep (task, at, detail) VALUES (?, ?, ?) ON CONFLICT (task)"
                     " DO UPDATE SET at = excluded.at, detail = excluded.detail",
                     (task, at, None if detail is None else json.dumps(detail)))


def upkeep_state(db) -> dict[str, dict]:
    """{task: {"at": time, "detail": ...}} of the periodic tasks that ever ran."""
    return {r[0]: {"at": r[1], "detail": json.loads(r[2]) if r[2] else None}
            for r in db.conn.execute("SELECT task, at, detail FROM upkeep")}


# How each table is pruned by age: the groups to walk (None: the whole table at once) and the
# DELETE for one group, along an index whose prefix is the group and then the time, so each
# statement reads only rows it deletes. Readings are indexed (node_id, qid, t): walking the
# (node, quantity) pairs `latest` holds avoids scanning the biggest table.
_PRUNE = {
    "status_log": (None, "SELECT rowid FROM status_log INDEXED BY status_log_t_boots WHERE t < ?"),
    "readings": ("SELECT DISTINCT node_id, qid FROM latest",
                 "SELECT rowid FROM readings INDEXED BY readings_node_qid_t"
                 " WHERE node_id = ? AND qid = ? AND t < ?"),
    "receptions": ("SELECT id FROM nodes", "SELECT rowid FROM receptions INDEXED BY receptions_node"
                                           " WHERE node_id = ? AND received_at < ?"),
    "events": ("SELECT id FROM nodes",
               "SELECT rowid FROM events INDEXED BY events_node_t WHERE node_id = ? AND t < ?"),
    "bad_frames": (None, "SELECT rowid FROM bad_frames INDEXED BY bad_frames_time"
                         " WHERE received_at < ?"),
    "provider_downlinks": ("SELECT id FROM nodes",
                           "SELECT rowid FROM provider_downlinks INDEXED BY provider_downlinks_node"
                           " WHERE node_id = ? AND t < ?"),
}


def prune_old(db, table: str, before: float, chunk: int = 5000) -> int:
    """Delete a table's rows older than `before` in short transactions; the count deleted.

    Each transaction deletes at most `chunk` rows, so the ingest worker never waits long for the
    write lock; many small groups (nodes) share one transaction.
    """
    groups_sql, select = _PRUNE[table]
    delete = f"DELETE FROM {table} WHERE rowid IN ({select} LIMIT ?)"
    groups = [tuple(g) for g in db.conn.execute(groups_sql)] if groups_sql else [()]
    total = 0
    while groups:
        with transaction(db) as conn:
            room = chunk
            while groups and room:
                n = conn.execute(delete, (*groups[-1], before, room)).rowcount
                total += n
                if n < room:
                    groups.pop()  # nothing older left in this group
                room -= n
    return total


def open_alert(db, node_id, kind, detail, now=None) -> bool:
    """Open an alert of a kind for a node (e.g. update_failed from OTA); False if already open."""
    if kind not in ALERT_KINDS:
        raise BadFilter(f"alert kind {kind!r}: expected one of {', '.join(ALERT_KINDS)}")
    with transaction(db) as conn:
        return conn.execute(
            "INSERT OR IGNORE INTO alerts (node_id, kind, detail, opened) VALUES (?, ?, ?, ?)",
            (node_id, kind, detail, time.time() if now is None else now)).rowcount == 1


def list_alerts(db, node_id=None, unresolved=True, limit=50) -> list[dict]:
    """Alerts, newest first: unresolved ones (open or acknowledged), or all."""
    sql = ("SELECT a.*, n.name AS node_name FROM alerts a LEFT JOIN nodes n ON n.id = a.node_id"
           " WHERE 1")
    args: list = []
    if unresolved:
        sql += " AND a.state != 'resolved'"
    if node_id is not None:
        sql += " AND a.node_id = ?"
        args.append(node_id)
    sql += " ORDER BY a.id DESC LIMIT ?"
    args.append(limit)
    return list(db.query(sql, args))


def get_alert(db, alert_id) -> dict:
    """One alert; raise UnknownAlert if there is none with that id."""
    rows = list(db.query("SELECT * FROM alerts WHERE id = ?", [alert_id]))
    if not rows:
        raise UnknownAlert(f"no alert {alert_id}")
    return rows[0]


def change_alert(db, alert_id, action, actor=None) -> dict:
    """Acknowledge or resolve an alert; audited. Return the alert."""
    if action not in ("ack", "resolve"):
        raise BadFilter(f"alert action {action!r}: expected ack or resolve")
    now = time.time()
    with transaction(db) as conn:
        row = conn.execute("SELECT node_id, kind, state FROM alerts WHERE id = ?",
                           (alert_id,)).fetchone()
        if row is None:
            raise UnknownAlert(f"no alert {alert_id}")
        if row[2] == "resolved":
            raise AlertResolved(f"alert {alert_id} is already resolved")
        if action == "ack":
            conn.execute("UPDATE alerts SET state = 'acked', acked_by = ?, acked_at = ?"
                         " WHERE id = ?", (actor, now, alert_id))
        else:
            conn.execute("UPDATE alerts SET state = 'resolved', resolved_by = ?, resolved_at = ?"
                         " WHERE id = ?", (actor, now, alert_id))
        conn.execute(
            "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (now, actor, f"alert.{action}", row[0], json.dumps({"alert": alert_id,
                                                                "kind": row[1]})))
    return {"id": alert_id, "node_id": row[0], "kind": row[1]}


# --- ingest (hot path: keep per-row Python work small) -------------------------------------------

_INSERT_FRAME = (
    "INSERT OR IGNORE INTO frames (node_id, direction, seq, type, received_at, device_ts, provider)"
    " VALUES (?, 'up', ?, ?, ?, ?, ?)"
)
_INSERT_READING = "INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, ?, ?, ?, ?)"
_UPSERT_LATEST = (
    "INSERT INTO latest (node_id, qid, inst, t, value) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (node_id, qid, inst) DO UPDATE SET t = excluded.t, value = excluded.value"
    " WHERE excluded.t >= latest.t"
)


def tune_for_bulk_writes(db):
    """Settings for the ingest's connection: it writes far more than anyone else."""
    # The default 2 MB page cache evicts the index pages every batch touches; 64 MB keeps them.
    db.conn.execute("PRAGMA cache_size = -65536")
    # Checkpoint every ~40 MB of WAL instead of ~4 MB: index pages rewritten by many batches
    # are copied back to the database file once instead of many times.
    db.conn.execute("PRAGMA wal_autocheckpoint = 10000")


def up_seqs(db) -> dict[str, int]:
    """Last extended uplink seq of every node, to resume seq extension after a restart."""
    return dict(db.conn.execute("SELECT id, up_seq FROM nodes WHERE up_seq IS NOT NULL"))


def boot_times(db) -> dict[str, float]:
    """When every node last booted, as its newest STATUS told (its time minus its uptime)."""
    return dict(db.conn.execute("SELECT id, status_at - uptime FROM nodes"
                                " WHERE status_at IS NOT NULL AND uptime IS NOT NULL"))


def known_node_ids(db) -> set[str]:
    """Ids of every registered node."""
    return {r[0] for r in db.conn.execute("SELECT id FROM nodes")}


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


def _insert_frames(conn, frames: list[tuple]) -> list[tuple]:
    """Insert frames, ignoring ones already stored; return the frames that were new."""
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
    ota_rows = []
    trusts = {}
    readings_rows = []
    latest_rows = {}
    statuses = []
    events_rows = []
    results = []
    battery = {}
    with transaction(db) as conn:
        if batch.new_nodes:
            conn.executemany(
                "INSERT OR IGNORE INTO nodes (id, provider, created) VALUES (?, ?, ?)",
                batch.new_nodes,
            )
        fresh = _insert_frames(conn, batch.frames)
        new = len(fresh)
        for node, seq, mtype, received_at, ts, provider, body in fresh:
            t = received_at if ts is None else ts
            if mtype == telemetry:
                for qid, inst, value in body:
                    readings_rows.append((node, t, qid, inst, value))
                    latest_rows[(node, qid, inst)] = (node, qid, inst, t, value)
                    if qid == 2 and inst == 0:
                        battery[node] = (value, node)
            elif mtype == status:
                statuses.append(
                    (
                        body.get("fw"), body.get("uptime"), body.get("reset"),
                        body.get("heap_free"), body.get("rssi"), body.get("queue"),
                        body.get("dropped"), body.get("boots"), body.get("interval"),
                        body.get("micropython"), t, node,
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
        if readings_rows:
            conn.executemany(_INSERT_READING, readings_rows)
            conn.executemany(_UPSERT_LATEST, latest_rows.values())
        if battery:
            conn.executemany("UPDATE nodes SET battery = ? WHERE id = ?", battery.values())
        if statuses:
            conn.executemany(
                # A field a STATUS leaves out keeps its last value (docs/protocol.md, STATUS):
                # a compact STATUS must not blank what the full one after boot reported.
                "UPDATE nodes SET firmware_version = coalesce(?, firmware_version),"
                " uptime = ?, reset_cause = coalesce(?, reset_cause),"
                " heap_free = coalesce(?, heap_free), rssi = coalesce(?, rssi),"
                " queue = coalesce(?, queue), dropped = coalesce(?, dropped),"
                " boots = coalesce(?, boots), interval = coalesce(?, interval),"
                " micropython_version = coalesce(?, micropython_version), status_at = ?"
                " WHERE id = ?",
                statuses,
            )
            conn.executemany(
                "INSERT INTO status_log (firmware_version, uptime, reset_cause, heap_free, rssi,"
                " queue, dropped, boots, t, node_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [st[:8] + st[10:] for st in statuses],
            )
        if ota_rows:
            conn.executemany(
                "INSERT INTO ota_reports (node_id, t, state, version, progress, reason, text, rid)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
                " result_at = ? WHERE id = ? AND node_id = ?",
                row[:6],
            ).rowcount == 0:
                # A RESULT for no command of ours (forged, or for another node's): shown and
                # counted like any frame the fleet cannot use, never stored silently.
                _code, _value, _text, received_at, cid, node, seq, provider = row
                topic, payload, size = batch.raw.get((node, seq), (None, None, None))
                bad.append((node, received_at, provider, topic, payload,
                            f"RESULT for command id {cid}, which the fleet never sent to {node}",
                            size))
        if batch.touch:
            conn.executemany(
                "UPDATE nodes SET last_seen = max(coalesce(last_seen, 0), ?), online = 1,"
                " provider = ?, up_seq = coalesce(max(up_seq, ?), up_seq, ?) WHERE id = ?",
                [(seen, prov, seq, seq, node) for node, (seen, prov, seq) in batch.touch.items()],
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
    return new


# --- commands ------------------------------------------------------------------------------------


def create_command(db, node_id, cmd, arg, created_by, body=None) -> tuple[int, int]:
    """Record a command and take the node's next downlink seq; return (cid, seq).

    body: the fields of a CONFIG downlink ({"interval": 60, ...}), stored and audited whole.
    """
    get_node(db, node_id)
    now = time.time()
    with transaction(db) as conn:
        seq = conn.execute(
            "UPDATE nodes SET down_seq = down_seq + 1 WHERE id = ? RETURNING down_seq", (node_id,)
        ).fetchone()[0]
        cid = conn.execute(
            "INSERT INTO commands (node_id, cmd, arg, created_by, created, seq, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (node_id, cmd, arg, created_by, now, seq, None if body is None else json.dumps(body)),
        ).lastrowid
        detail = {"cid": cid, "cmd": cmd, "arg": arg}
        if body is not None:
            detail = {"cid": cid, "cmd": cmd, **body}
        conn.execute(
            "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (now, created_by, "command", node_id, json.dumps(detail)),
        )
    return cid, seq


def mark_command_sent(db, cid, mtype):
    """Note that the broker accepted the command's frame."""
    now = time.time()
    with transaction(db) as conn:
        row = conn.execute("SELECT node_id, seq FROM commands WHERE id = ?", (cid,)).fetchone()
        conn.execute("UPDATE commands SET sent_at = ? WHERE id = ?", (now, cid))
        conn.execute(
            "INSERT OR IGNORE INTO frames (node_id, direction, seq, type, received_at, provider)"
            " VALUES (?, 'down', ?, ?, ?, 'mqtt')",
            (row[0], row[1], mtype, now),
        )


def get_command(db, node_id, cid) -> dict:
    """One command with its result; raise UnknownCommand if it does not exist for the node."""
    rows = list(
        db.query(
            "SELECT id, node_id, cmd, arg, created_by, created, seq, sent_at, result_code,"
            " result_value, result_text, result_at, body FROM commands WHERE id = ?"
            " AND node_id = ?",
            [cid, node_id],
        )
    )
    if not rows:
        raise UnknownCommand(f"no command {cid} for node {node_id!r}")
    return _command_row(rows[0])


def _command_row(row: dict) -> dict:
    row["body"] = json.loads(row["body"]) if row.get("body") else None
    return row


def list_commands(db, node_id, limit=20) -> list[dict]:
    """A node's most recent commands, newest first."""
    return [_command_row(r) for r in db.query(
        "SELECT id, cmd, arg, created_by, created, sent_at, result_code, result_value,"
        " result_text, result_at, body FROM commands WHERE node_id = ? ORDER BY id DESC LIMIT ?",
        [node_id, limit])]


def last_config(db, node_id) -> dict | None:
    """The node's newest CONFIG command with its fields and result, or None."""
    rows = list(db.query(
        "SELECT id, arg, created, created_by, sent_at, result_code, result_value, result_text,"
        " result_at, body FROM commands INDEXED BY commands_node WHERE node_id = ?"
        " AND cmd = 'config' ORDER BY id DESC LIMIT 1", [node_id]))
    if not rows:
        return None
    row = _command_row(rows[0])
    if row["body"] is None:  # sent before schema 13 kept the fields: only the interval is known
        row["body"] = {} if row["arg"] is None else {"interval": row["arg"]}
    return row


# --- users, tokens, audit ------------------------------------------------------------------------


def audit(db, actor, action, target=None, detail=None):
    """Append one entry to the audit log."""
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, None if detail is None else json.dumps(detail)),
        )


def audit_log(db, limit=100, actor=None, target=None, before=None) -> list[dict]:
    """Most recent audit entries (of one actor and/or target; ids below `before`), newest first."""
    sql, args = "SELECT * FROM audit WHERE 1", []
    for column, value in (("actor", actor), ("target", target)):
        if value:
            sql += f" AND {column} = ?"
            args.append(value)
    if before is not None:
        sql += " AND id < ?"
        args.append(before)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return list(db.query(sql, args))


def list_users(db) -> list[dict]:
    """Every user (without password hashes), by name."""
    return list(db.query("SELECT id, name, role, created FROM users ORDER BY name"))


def set_user_role(db, name, role, actor=None):
    """Change a user's role; raise StoreError if there is no such user."""
    with transaction(db) as conn:
        if conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name)).rowcount != 1:
            raise StoreError(f"unknown user {name!r}")
        conn.execute(
            "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, "user.role", name, json.dumps({"role": role})),
        )


def list_tokens(db) -> list[dict]:
    """Every API token's name, role and times (never the hash)."""
    return list(db.query("SELECT name, role, created, last_used FROM api_tokens ORDER BY name"))


def add_user(db, name, password_hash, role, actor=None):
    """Create a user; raise DuplicateName if the name is taken."""
    try:
        with transaction(db) as conn:
            conn.execute(
                "INSERT INTO users (name, password_hash, role, created) VALUES (?, ?, ?, ?)",
                (name, password_hash, role, time.time()),
            )
    except sqlite3.IntegrityError:
        raise DuplicateName(f"user {name!r} already exists") from None
    audit(db, actor, "user.add", name, {"role": role})


def get_user(db, name) -> dict | None:
    """The user with that name, or None."""
    rows = list(db.query("SELECT * FROM users WHERE name = ?", [name]))
    return rows[0] if rows else None


def get_user_by_id(db, user_id) -> dict | None:
    """The user with that id, or None."""
    rows = list(db.query("SELECT * FROM users WHERE id = ?", [user_id]))
    return rows[0] if rows else None


def hash_token(token: str) -> str:
    """Tokens are long random strings, so one SHA-256 is enough (no salt or stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(db, name, token, role="operator", actor=None):
    """Store a token's hash under a name; raise DuplicateName if the name is taken."""
    try:
        with transaction(db) as conn:
            conn.execute(
                "INSERT INTO api_tokens (name, token_hash, created, role) VALUES (?, ?, ?, ?)",
                (name, hash_token(token), time.time(), role),
            )
    except sqlite3.IntegrityError:
        raise DuplicateName(f"token {name!r} already exists") from None
    audit(db, actor, "token.create", name, {"role": role})


def token_name(db, token: str) -> str | None:
    """Name of the token, or None if no such token exists."""
    row = db.conn.execute(
        "SELECT name FROM api_tokens WHERE token_hash = ?", (hash_token(token),)
    ).fetchone()
    return row[0] if row else None


def token_info(db, token: str) -> dict | None:
    """{"name", "role"} of the token, or None if no such token exists."""
    row = db.conn.execute(
        "SELECT name, role FROM api_tokens WHERE token_hash = ?", (hash_token(token),)
    ).fetchone()
    return None if row is None else {"name": row[0], "role": row[1]}


# --- provisioning: node credentials ---------------------------------------------------------------

CREDENTIAL_COLUMNS = (
    "node_id, mqtt_user, dev_eui, join_eui, ota_keys, mac, created, created_by, revoked_at, "
    "revoked_by"
)


def register_node(db, node_id: str, cred: dict, name=None, board=None, provider="mqtt",
                  actor=None) -> None:
    """Create (or adopt) a node and store its new credentials in one transaction.

    cred: mqtt_user, mqtt_hash, dev_eui, join_eui, app_key, ota_keys (dict), mac. Raises
    AlreadyRegistered if the node holds active credentials, DuplicateName if the DevEUI, MAC or
    MQTT user belongs to another node.
    """
    now = time.time()
    try:
        with transaction(db) as conn:
            row = conn.execute("SELECT revoked_at FROM node_credentials WHERE node_id = ?",
                               (node_id,)).fetchone()
            if row is not None and row[0] is None:
                raise AlreadyRegistered(f"node {node_id!r} is already registered; revoke it "
                                        "first or rotate its credentials")
            conn.execute("DELETE FROM node_credentials WHERE node_id = ?", (node_id,))
            conn.execute(
                "INSERT OR IGNORE INTO nodes (id, name, board, provider, created, tags)"
                " VALUES (?, ?, ?, ?, ?, '[]')", (node_id, name, board, provider, now))
            conn.execute("UPDATE nodes SET board = coalesce(?, board), name = coalesce(?, name)"
                         " WHERE id = ?", (board, name, node_id))
            conn.execute(
                "INSERT INTO node_credentials (node_id, mqtt_user, mqtt_hash, dev_eui, join_eui,"
                " app_key, ota_keys, mac, created, created_by) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (node_id, cred["mqtt_user"], cred["mqtt_hash"], cred.get("dev_eui"),
                 cred.get("join_eui"), cred.get("app_key"), json.dumps(cred.get("ota_keys") or {}),
                 cred.get("mac"), now, actor))
            conn.execute(
                "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (now, actor, "node.register", node_id, json.dumps({"board": board})))
    except sqlite3.IntegrityError as e:
        raise DuplicateName(f"cannot register {node_id!r}: {e} (DevEUI, MAC or MQTT user "
                            "already belongs to another node)") from None


def get_credentials(db, node_id: str) -> dict | None:
    """A node's credential record without secrets (no hashes, no AppKey), or None."""
    rows = list(db.query(f"SELECT {CREDENTIAL_COLUMNS} FROM node_credentials WHERE node_id = ?",
                         [node_id]))
    if not rows:
        return None
    row = rows[0]
    row["ota_keys"] = json.loads(row["ota_keys"])
    return row


def node_for_mac(db, mac: str) -> str | None:
    """The node registered with this hardware id (MAC), or None."""
    row = db.conn.execute("SELECT node_id FROM node_credentials WHERE mac = ?", (mac,)).fetchone()
    return row[0] if row else None


def active_mqtt_hashes(db) -> dict[str, str]:
    """{mqtt user: $7$ hash} of every node whose credentials are not revoked."""
    rows = db.conn.execute(
        "SELECT mqtt_user, mqtt_hash FROM node_credentials WHERE revoked_at IS NULL")
    return dict(rows.fetchall())


def set_ota_keys(db, node_id: str, keys: dict) -> None:
    """The update keys a node's new image carries: they replace what it trusted before."""
    with transaction(db) as conn:
        conn.execute("UPDATE node_credentials SET ota_keys = ? WHERE node_id = ?"
                     " AND revoked_at IS NULL", (json.dumps(keys), node_id))
        conn.execute("UPDATE nodes SET ota_keys = NULL WHERE id = ?", (node_id,))


def trusted_key_ids(db, node_ids=None) -> dict[str, list[str] | None]:
    """{node id: ids of the update keys it trusts} (None: not known, e.g. a node enrolled by its
    first frame). What the node last reported wins over what it was provisioned with."""
    sql = ("SELECT n.id, n.ota_keys, c.ota_keys FROM nodes n LEFT JOIN node_credentials c"
           " ON c.node_id = n.id AND c.revoked_at IS NULL")
    args = []
    wanted = None
    if node_ids is not None:
        node_ids = list(node_ids)
        if len(node_ids) <= 500:
            sql += f" WHERE n.id IN ({', '.join('?' * len(node_ids))})"
            args = node_ids
        else:  # a big rollout: one pass over all nodes beats thousands of parameters
            wanted = set(node_ids)
    out = {}
    for node, reported, provisioned in db.conn.execute(sql, args):
        if wanted is not None and node not in wanted:
            continue
        if reported:
            out[node] = sorted(reported.split(","))
        elif provisioned:
            out[node] = sorted(json.loads(provisioned)) or None
        else:
            out[node] = None
    return out


def set_mqtt_hash(db, node_id: str, mqtt_hash: str, actor=None) -> None:
    """Replace a node's MQTT password hash (rotation); raise UnknownNode if it has none."""
    with transaction(db) as conn:
        cur = conn.execute("UPDATE node_credentials SET mqtt_hash = ? WHERE node_id = ?"
                           " AND revoked_at IS NULL", (mqtt_hash, node_id))
        if cur.rowcount != 1:
            raise UnknownNode(f"node {node_id!r} has no active credentials")
        conn.execute("INSERT INTO audit (t, actor, action, target) VALUES (?, ?, ?, ?)",
                     (time.time(), actor, "node.rotate", node_id))


def revoke_credentials(db, node_id: str, actor=None) -> None:
    """Mark a node's credentials revoked; raise UnknownNode if it has no active ones."""
    now = time.time()
    with transaction(db) as conn:
        cur = conn.execute("UPDATE node_credentials SET revoked_at = ?, revoked_by = ?"
                           " WHERE node_id = ? AND revoked_at IS NULL", (now, actor, node_id))
        if cur.rowcount != 1:
            raise UnknownNode(f"node {node_id!r} has no active credentials to revoke")
        conn.execute("INSERT INTO audit (t, actor, action, target) VALUES (?, ?, ?, ?)",
                     (now, actor, "node.revoke", node_id))


def lorawan_keys(db, node_id: str) -> dict | None:
    """A node's DevEUI, JoinEUI and AppKey (for its image or the network server), or None."""
    row = db.conn.execute("SELECT dev_eui, join_eui, app_key FROM node_credentials WHERE"
                          " node_id = ? AND revoked_at IS NULL", (node_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    return {"dev_eui": row[0], "join_eui": row[1], "app_key": row[2]}


# --- provisioning: claim tokens and claims -------------------------------------------------------


def add_claim_token(db, token_id, secret_hash, board, max_uses, expires, auto_approve, actor):
    """Store a claim token (its secret only as a hash)."""
    now = time.time()
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO claim_tokens (id, secret_hash, board, max_uses, expires, auto_approve,"
            " created, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (token_id, secret_hash, board, max_uses, expires, int(auto_approve), now, actor))
        conn.execute("INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                     (now, actor, "claim_token.create", token_id,
                      json.dumps({"board": board, "uses": max_uses, "auto": auto_approve})))


def get_claim_token(db, token_id) -> dict | None:
    rows = list(db.query("SELECT * FROM claim_tokens WHERE id = ?", [token_id]))
    return rows[0] if rows else None


def claim_token_usable(token: dict, now: float | None = None) -> bool:
    """True while the token is not revoked, not expired and has uses left."""
    now = time.time() if now is None else now
    return (token["revoked_at"] is None and token["expires"] > now
            and token["uses"] < token["max_uses"])


def list_claim_tokens(db) -> list[dict]:
    return list(db.query("SELECT id, board, max_uses, uses, expires, auto_approve, created,"
                         " created_by, revoked_at FROM claim_tokens ORDER BY created DESC"))


# A claim whose identity the fleet issued but the board has not used yet: the answer may never
# have reached the board (fleet/claims.py hands it a fresh password when it asks again).
_UNDELIVERED = (
    "SELECT 1 FROM claims c JOIN node_credentials k ON k.node_id = c.node_id"
    " JOIN nodes n ON n.id = c.node_id WHERE c.state = 'issued' AND k.revoked_at IS NULL"
    " AND n.last_seen IS NULL")
# The tokens the claim listener admits: usable ones, and used-up ones while a board they issued
# an identity to has not been heard with it yet (it may still have to fetch the answer).
_ADMITTED = (f"revoked_at IS NULL AND expires > ? AND (uses < max_uses OR EXISTS ("
             f"{_UNDELIVERED} AND c.token_id = claim_tokens.id))")


def active_claim_token_hashes(db) -> dict[str, str]:
    """{token id: secret hash} of every token the broker's claim listener may admit now."""
    rows = db.conn.execute(f"SELECT id, secret_hash FROM claim_tokens WHERE {_ADMITTED}",
                           (time.time(),))
    return dict(rows.fetchall())


def next_claim_token_expiry(db, now: float | None = None) -> float | None:
    """When the next token the claim listener admits now runs out of time (None: no such token)."""
    row = db.conn.execute(f"SELECT min(expires) FROM claim_tokens WHERE {_ADMITTED}",
                          (time.time() if now is None else now,)).fetchone()
    return row[0]


def claim_undelivered(db, claim_id) -> bool:
    """True while the identity issued for this claim has not been used by its board."""
    return db.conn.execute(f"{_UNDELIVERED} AND c.id = ?", (claim_id,)).fetchone() is not None


def use_claim_token(db, token_id) -> bool:
    """Take one use of a token (atomically); False if it has none left or expired."""
    with transaction(db) as conn:
        cur = conn.execute("UPDATE claim_tokens SET uses = uses + 1 WHERE id = ? AND uses <"
                           " max_uses AND expires > ? AND revoked_at IS NULL",
                           (token_id, time.time()))
        return cur.rowcount == 1


def revoke_claim_token(db, token_id, actor=None) -> None:
    with transaction(db) as conn:
        cur = conn.execute("UPDATE claim_tokens SET revoked_at = ? WHERE id = ? AND"
                           " revoked_at IS NULL", (time.time(), token_id))
        if cur.rowcount != 1:
            raise StoreError(f"no active claim token {token_id!r}")
        conn.execute("INSERT INTO audit (t, actor, action, target) VALUES (?, ?, ?, ?)",
                     (time.time(), actor, "claim_token.revoke", token_id))


def get_claim(db, mac) -> dict | None:
    """The claim made for this hardware id, or None."""
    rows = list(db.query("SELECT * FROM claims WHERE mac = ?", [mac]))
    return rows[0] if rows else None


def get_claim_by_id(db, claim_id) -> dict | None:
    rows = list(db.query("SELECT * FROM claims WHERE id = ?", [claim_id]))
    return rows[0] if rows else None


def add_claim(db, token_id, client_id, mac, board) -> dict:
    """Record a new pending claim and return it."""
    with transaction(db) as conn:
        conn.execute("INSERT INTO claims (token_id, client_id, mac, board, requested_at)"
                     " VALUES (?, ?, ?, ?, ?)", (token_id, client_id, mac, board, time.time()))
    return get_claim(db, mac)


CLAIM_STATES = ("pending", "approved", "rejected", "issued")


def list_claims(db, limit=200, state=None) -> list[dict]:
    """Claims, newest first; only those in `state` if given."""
    if state is None:
        return list(db.query("SELECT * FROM claims ORDER BY id DESC LIMIT ?", [limit]))
    return list(db.query("SELECT * FROM claims WHERE state = ? ORDER BY id DESC LIMIT ?",
                         [state, limit]))


def decide_claim(db, claim_id, state, actor, reason=None) -> None:
    """Approve or reject a pending claim; StoreError if it is not pending."""
    with transaction(db) as conn:
        cur = conn.execute("UPDATE claims SET state = ?, decided_at = ?, decided_by = ?,"
                           " reason = ? WHERE id = ? AND state = 'pending'",
                           (state, time.time(), actor, reason, claim_id))
        if cur.rowcount != 1:
            raise StoreError(f"claim {claim_id} is not waiting for a decision")
        conn.execute("INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                     (time.time(), actor, f"claim.{state}", str(claim_id),
                      json.dumps({"reason": reason}) if reason else None))


def mark_claim_issued(db, claim_id, node_id) -> None:
    with transaction(db) as conn:
        conn.execute("UPDATE claims SET state = 'issued', node_id = ? WHERE id = ?",
                     (node_id, claim_id))


# --- OTA releases and rollouts (fleet/ota.py, fleet/rollouts.py) ---------------------------------


class UnknownRelease(StoreError):
    """No release with that version is stored."""


class UnknownRollout(StoreError):
    """No rollout with that id exists."""


def add_release(db, m: dict, manifest_sha: str, actor=None) -> None:
    """Record a checked release (fleet/ota.py); raise DuplicateName if the version exists."""
    try:
        with transaction(db) as conn:
            conn.execute(
                "INSERT INTO releases (version, key_id, boards, micropython, files, size,"
                " manifest_sha, created, created_by, runtime_micropython)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (m["version"], m["key"], json.dumps(m["boards"]), m.get("micropython"),
                 len(m["files"]), sum(f["size"] for f in m["files"]), manifest_sha, time.time(),
                 actor, (m.get("runtime") or {}).get("micropython")))
            conn.execute("INSERT INTO audit (t, actor, action, target, detail) VALUES (?,?,?,?,?)",
                         (time.time(), actor, "release.upload", m["version"],
                          json.dumps({"key": m["key"], "boards": m["boards"]})))
    except sqlite3.IntegrityError:
        raise DuplicateName(f"release {m['version']} already exists; releases are immutable, "
                            "build a new version") from None


def _release(row: dict) -> dict:
    row["boards"] = json.loads(row["boards"])
    return row


def list_releases(db) -> list[dict]:
    return [_release(r) for r in db.query("SELECT * FROM releases ORDER BY created DESC")]


def get_release(db, version: str) -> dict:
    rows = list(db.query("SELECT * FROM releases WHERE version = ?", [version]))
    if not rows:
        raise UnknownRelease(f"no release {version!r}")
    return _release(rows[0])


def ota_reports(db, node_id=None, after_id=0, limit=1000) -> list[dict]:
    """OTA_UP reports in arrival order (of one node; with ids above after_id)."""
    sql, args = "SELECT * FROM ota_reports WHERE id > ?", [after_id]
    if node_id is not None:
        sql += " AND node_id = ?"
        args.append(node_id)
    return list(db.query(sql + " ORDER BY id LIMIT ?", args + [limit]))


def last_ota_report_id(db) -> int:
    return db.conn.execute("SELECT coalesce(max(id), 0) FROM ota_reports").fetchone()[0]


def _rollout(row: dict) -> dict:
    row["stages"] = json.loads(row["stages"])
    row["target"] = json.loads(row["target"])
    return row


def add_rollout(db, release, stages, max_failures, max_health_drop, target, nodes, actor=None,
                now=None) -> int:
    """Create a running rollout; nodes: [(node_id, stage, state, from_version)]."""
    now = time.time() if now is None else now
    with transaction(db) as conn:
        rid = conn.execute(
            "INSERT INTO rollouts (release, state, stages, stage, stage_started, max_failures,"
            " max_health_drop, target, report_id, created, created_by, updated)"
            " VALUES (?, 'running', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
            (release, json.dumps(stages), now, max_failures, max_health_drop, json.dumps(target),
             conn.execute("SELECT coalesce(max(id), 0) FROM ota_reports").fetchone()[0], now,
             actor, now)).lastrowid
        conn.executemany(
            "INSERT INTO rollout_nodes (rollout_id, node_id, stage, state, from_version, updated)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(rid, n, st, s, v, now) for n, st, s, v in nodes])
        conn.execute("INSERT INTO audit (t, actor, action, target, detail) VALUES (?,?,?,?,?)",
                     (now, actor, "rollout.create", f"rollout:{rid}",
                      json.dumps({"release": release, "nodes": len(nodes), "target": target})))
    return rid


def add_rollout_nodes(db, rid: int, nodes, actor=None, skipped=None, now=None) -> None:
    """Add nodes to a rollout ([(node_id, stage, state, from_version)]), audited with the skips."""
    now = time.time() if now is None else now
    with transaction(db) as conn:
        conn.executemany(
            "INSERT INTO rollout_nodes (rollout_id, node_id, stage, state, from_version, updated)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(rid, n, st, s, v, now) for n, st, s, v in nodes])
        conn.execute("UPDATE rollouts SET updated = ? WHERE id = ?", (now, rid))
        conn.execute("INSERT INTO audit (t, actor, action, target, detail) VALUES (?,?,?,?,?)",
                     (now, actor, "rollout.add-nodes", f"rollout:{rid}",
                      json.dumps({"added": len(nodes), "skipped": skipped or {},
                                  "nodes": [n[0] for n in nodes[:20]]})))


def open_rollouts(db) -> list[dict]:
    """Rollouts that still take nodes (running or paused), newest first."""
    return [_rollout(r) for r in db.query(
        "SELECT * FROM rollouts WHERE state IN ('running', 'paused') ORDER BY id DESC")]


def get_rollout(db, rid: int) -> dict:
    rows = list(db.query("SELECT * FROM rollouts WHERE id = ?", [rid]))
    if not rows:
        raise UnknownRollout(f"no rollout {rid}")
    return _rollout(rows[0])


def list_rollouts(db, state=None) -> list[dict]:
    sql, args = "SELECT * FROM rollouts", []
    if state:
        sql += " WHERE state = ?"
        args.append(state)
    return [_rollout(r) for r in db.query(sql + " ORDER BY id DESC", args)]


def rollout_nodes(db, rid: int, state=None, limit=100000) -> list[dict]:
    sql = ("SELECT rn.*, n.firmware_version, n.micropython_version, n.online, n.last_seen,"
           " n.reset_cause, n.boots"
           " FROM rollout_nodes rn LEFT JOIN nodes n ON n.id = rn.node_id WHERE rollout_id = ?")
    args: list = [rid]
    if state:
        sql += " AND rn.state = ?"
        args.append(state)
    return list(db.query(sql + " ORDER BY rn.stage, rn.node_id LIMIT ?", args + [limit]))


def rollout_counts(db, rid: int) -> dict:
    """{stage: {state: count}} of a rollout."""
    out: dict = {}
    for stage, state, n in db.conn.execute(
            "SELECT stage, state, count(*) FROM rollout_nodes WHERE rollout_id = ?"
            " GROUP BY stage, state", (rid,)):
        out.setdefault(stage, {})[state] = n
    return out


def update_rollout(db, rid: int, actor=None, action=None, **fields) -> None:
    """Change rollout columns; with action, also write an audit entry."""
    now = time.time()
    fields["updated"] = now
    cols = ", ".join(f"{k} = ?" for k in fields)
    with transaction(db) as conn:
        conn.execute(f"UPDATE rollouts SET {cols} WHERE id = ?", [*fields.values(), rid])
        if action:
            conn.execute("INSERT INTO audit (t, actor, action, target, detail) VALUES (?,?,?,?,?)",
                         (now, actor, action, f"rollout:{rid}",
                          json.dumps({k: v for k, v in fields.items() if k != "updated"})))


def set_rollout_nodes(db, rid: int, rows: list[tuple]) -> None:
    """rows: (state, offered_at, progress, reason, attempts, node_id) for nodes of rollout rid."""
    if not rows:
        return
    now = time.time()
    with transaction(db) as conn:
        conn.executemany(
            "UPDATE rollout_nodes SET state = ?, offered_at = ?, progress = ?, reason = ?,"
            " attempts = ?, updated = ? WHERE rollout_id = ? AND node_id = ?",
            [(s, o, p, r, a, now, rid, n) for s, o, p, r, a, n in rows])


def rollout_offer_for(db, node_id: str) -> dict | None:
    """The offer a running rollout holds for this node now (periodic check), or None."""
    rows = list(db.query(
        "SELECT r.id, r.release FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id"
        " WHERE rn.node_id = ? AND r.state = 'running' AND rn.stage <= r.stage"
        " AND rn.state IN ('pending', 'offered') ORDER BY r.id DESC LIMIT 1", [node_id]))
    return {"version": rows[0]["release"], "rid": rows[0]["id"]} if rows else None


def take_down_seqs(db, node_ids: list[str]) -> dict[str, int]:
    """Take the next downlink seq of each node (one transaction); return {node: seq}."""
    out = {}
    with transaction(db) as conn:
        for n in node_ids:
            row = conn.execute("UPDATE nodes SET down_seq = down_seq + 1 WHERE id = ?"
                               " RETURNING down_seq", (n,)).fetchone()
            if row:
                out[n] = row[0]
    return out


def node_login_hash(db, mqtt_user: str) -> tuple[str, str] | None:
    """(node id, $7$ hash) of an active MQTT login, for nodes fetching OTA files; else None."""
    row = db.conn.execute("SELECT node_id, mqtt_hash FROM node_credentials WHERE mqtt_user = ?"
                          " AND revoked_at IS NULL", (mqtt_user,)).fetchone()
    return (row[0], row[1]) if row else None
