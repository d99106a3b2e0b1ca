-- Device profiles (issue 17): how a node's payload becomes readings. Every node has one;
-- 'polylink' (our protocol and firmware, OTA included) is what every node had before, so an
-- existing fleet migrates with every node on it. fields and commands are JSON arrays.
CREATE TABLE device_profiles (
    name TEXT PRIMARY KEY,
    codec TEXT NOT NULL,
    source TEXT,
    fields TEXT NOT NULL DEFAULT '[]',
    interval INTEGER,
    commands TEXT NOT NULL DEFAULT '[]',
    description TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
INSERT INTO device_profiles (name, codec, description, created, updated)
    VALUES ('polylink', 'polylink', 'Polylink firmware and protocol (monitored and updated)', 0, 0);
ALTER TABLE nodes ADD COLUMN profile TEXT NOT NULL DEFAULT 'polylink';
-- The last payloads of each non-Polylink device, as received (bounded per node by the store),
-- so a changed codec can be tried against them before it is saved.
CREATE TABLE raw_payloads (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    provider TEXT,
    fport INTEGER,
    fcnt INTEGER,
    payload BLOB NOT NULL
);
CREATE INDEX raw_payloads_node ON raw_payloads (node_id, id);
-- SenML records taken in (RFC 8428 over MQTT or HTTPS): a sender retries until acknowledged,
-- and a record with the same node, resolved name and time is the same record (stored once).
CREATE TABLE senml_seen (
    node_id TEXT NOT NULL,
    name TEXT NOT NULL,
    t REAL NOT NULL,
    PRIMARY KEY (node_id, name, t)
);
CREATE INDEX senml_seen_node_t ON senml_seen (node_id, t);
-- Suppliers whose clouds post SenML for their own devices (HTTPS POST /api/v1/ingest/senml,
-- or MQTT as user supplier.NAME); the token is stored as hashes only: SHA-256 for the web, and
-- mosquitto's PBKDF2 for the broker's password file. A node belongs to at most one supplier.
CREATE TABLE suppliers (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    mqtt_hash TEXT NOT NULL,
    created REAL NOT NULL
);
ALTER TABLE nodes ADD COLUMN supplier TEXT;
