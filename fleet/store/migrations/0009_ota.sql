-- OTA: releases, the state reports nodes send (OTA_UP), rollouts and their nodes.
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
