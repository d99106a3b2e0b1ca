-- per-node identity minted at registration (provisioning): MQTT login (hash only),
-- LoRaWAN keys, trusted OTA keys, hardware id; revoked_at set means the broker refuses it.
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
