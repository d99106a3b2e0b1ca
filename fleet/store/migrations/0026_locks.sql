-- named locks for work that must run once however many workers run it (upkeep rounds, rollout
-- ticks): on SQLite a row here is the lock, held until `until` (a lease: a worker that died lets
-- go by itself); on PostgreSQL the store takes an advisory lock instead and leaves this empty.
CREATE TABLE locks (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until REAL NOT NULL
);
