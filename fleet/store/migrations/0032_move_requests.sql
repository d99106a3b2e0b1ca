-- Moving a node between organisations is approved by both sides (issue 18): one side's admin
-- asks (the owner giving the node away, or the other asking for a node shared with it), the
-- other side's admin approves or rejects; a pending request ends after 14 days. The platform
-- operator can still move a node at once (`fleet org move`).
CREATE TABLE move_requests (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    from_org_id INTEGER NOT NULL,
    to_org_id INTEGER NOT NULL,
    requested_by_org_id INTEGER NOT NULL,
    requested_by TEXT,
    requested_at REAL NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at REAL
);
CREATE INDEX move_requests_from ON move_requests (from_org_id, state);
CREATE INDEX move_requests_to ON move_requests (to_org_id, state);
