-- the registry and the telemetry store.
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
