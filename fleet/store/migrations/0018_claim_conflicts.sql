-- claim squatting (#19): a hardware id (MAC) may have several claims, one per board that asked
-- (claim id); a claim made while another one for the same MAC was pending or issued is a
-- conflict an operator decides, never the token. SQLite cannot drop a UNIQUE constraint, so the
-- table is copied.
CREATE TABLE claims_new (
    id INTEGER PRIMARY KEY,
    token_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    mac TEXT NOT NULL,
    board TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    node_id TEXT,
    requested_at REAL NOT NULL,
    decided_at REAL,
    decided_by TEXT,
    reason TEXT,
    conflict INTEGER NOT NULL DEFAULT 0
);
INSERT INTO claims_new (id, token_id, client_id, mac, board, state, node_id, requested_at,
    decided_at, decided_by, reason)
    SELECT id, token_id, client_id, mac, board, state, node_id, requested_at, decided_at,
        decided_by, reason FROM claims;
DROP TABLE claims;
ALTER TABLE claims_new RENAME TO claims;
CREATE UNIQUE INDEX claims_board ON claims (mac, client_id);
