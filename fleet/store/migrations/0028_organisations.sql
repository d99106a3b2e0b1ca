-- Organisations (issue 18): the city runs the platform, departments and companies run their
-- own devices on it. Every node, device profile, provider, release (its signing key is named by
-- the release), rollout, alert, export destination, API token and audit record belongs to one
-- organisation; users hold a role per organisation. An existing fleet becomes the platform
-- operator's organisation (the first row, id 1, which every org_id defaults to) holding every
-- user with the role they had, every node and all history.
CREATE TABLE organisations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    platform INTEGER NOT NULL DEFAULT 0,
    max_nodes INTEGER,
    max_requests_per_minute INTEGER,
    created REAL NOT NULL
);
-- Inserted into the empty table, so both dialects give it id 1.
INSERT INTO organisations (name, platform, created) VALUES ('platform', 1, 0);
-- Exactly one platform operator's organisation.
CREATE UNIQUE INDEX organisations_platform ON organisations (platform) WHERE platform = 1;
CREATE TABLE memberships (
    user_id INTEGER NOT NULL,
    org_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, org_id)
) WITHOUT ROWID;
CREATE INDEX memberships_org ON memberships (org_id);
INSERT INTO memberships (user_id, org_id, role) SELECT id, 1, role FROM users;
ALTER TABLE nodes ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE device_profiles ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE providers ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE releases ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE rollouts ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE alerts ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE export_destinations ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE api_tokens ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
CREATE INDEX nodes_org ON nodes (org_id, id);
CREATE INDEX alerts_org ON alerts (org_id, state, id);
CREATE INDEX audit_org ON audit (org_id, id);
-- Read access one organisation grants another to one node (node_id) or to every node carrying
-- a tag (tag); revoked grants stay, for the record.
CREATE TABLE shares (
    id INTEGER PRIMARY KEY,
    org_id INTEGER NOT NULL,
    grantee_org_id INTEGER NOT NULL,
    node_id TEXT,
    tag TEXT,
    created REAL NOT NULL,
    created_by TEXT,
    revoked_at REAL,
    revoked_by TEXT
);
CREATE INDEX shares_grantee ON shares (grantee_org_id, revoked_at);
-- API requests per organisation and minute, for the requests-per-minute quota: in the store,
-- not in a process's memory, so every web process counts against the same budget.
CREATE TABLE api_usage (
    org_id INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (org_id, minute)
) WITHOUT ROWID;
