-- OTA signing keys of organisations (issue 18): every signing key belongs to one organisation.
-- The platform operator's keys stay where they were (DATA_DIR/ota/trusted_keys.json, trusted by
-- every node); a key an organisation makes is recorded here with its owner. Its private half is
-- DATA_DIR/ota/keys/<id>.pem (0600) like the platform's, so a key id is unique across both.
CREATE TABLE ota_keys (
    id TEXT PRIMARY KEY,
    org_id INTEGER NOT NULL,
    public TEXT NOT NULL,
    created REAL NOT NULL,
    created_by TEXT
);
CREATE INDEX ota_keys_org ON ota_keys (org_id, id);
