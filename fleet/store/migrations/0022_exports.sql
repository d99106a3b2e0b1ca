-- exports: destinations registered once (the secret encrypted), a durable cursor per
-- destination over readings (by rowid) and events (by id), and the items a destination
-- refused for themselves (reported, not retried).
CREATE TABLE export_destinations (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    secret BLOB,
    nodes TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE export_cursors (
    destination TEXT PRIMARY KEY,
    reading_pos INTEGER NOT NULL DEFAULT 0,
    event_pos INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0,
    last_ok REAL,
    last_error TEXT,
    error_since REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL
);
CREATE TABLE export_refused (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    item_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX export_refused_dest ON export_refused (destination, id);
-- integrators' read-only MQTT logins for pl/v1/data/{node} (the password only as its hash).
CREATE TABLE export_readers (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    nodes TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL
);
