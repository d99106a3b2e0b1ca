-- the web UI: node positions, status history, alerts, and indexes for the node list's
-- filters and sorts over 10,000 nodes.
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
