-- zero-touch claims: claim tokens (limited uses and time; only the secret's hash) and
-- the claims boards made with them, waiting for approval or issued.
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
