-- LoRaWAN providers (The Things Stack, ChirpStack) with their password encrypted at rest,
-- the transport identities a node has on them, radio metadata of every reception of an
-- uplink (a frame heard on two providers is stored once, with both receptions), and the
-- downlinks sent through a provider (its daily budget).
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
