-- Running totals the ingest workers add to in the same transaction as each batch, so /metrics
-- (a web process that shares nothing with the workers but the store) can report rates with
-- Prometheus' rate(): frames stored, duplicates dropped, bad frames, readings stored.
-- One row per (counter, provider); a total only grows, across worker restarts too.
CREATE TABLE ingest_counters (
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    value INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, provider)
);
