-- exports' cursors in commit order (fleet/store/exports.py). Several ingest workers commit at
-- once, so an id (a sequence) taken by one transaction may become visible after a larger one of
-- another: a cursor by id alone would step over it. Each row of readings and events therefore
-- records the transaction that wrote it (xact, a 64-bit xid8 that never wraps), and a cursor walks
-- (xact, id) only below the oldest transaction still running (pg_snapshot_xmin): every row under
-- that horizon is committed (or was rolled back) and none can appear there any more.
ALTER TABLE export_cursors ADD COLUMN reading_xact BIGINT NOT NULL DEFAULT 0;
ALTER TABLE export_cursors ADD COLUMN event_xact BIGINT NOT NULL DEFAULT 0;
-- Readings had no key on PostgreSQL (SQLite's rowid stands in for one there): an id from a
-- sequence, given to the rows already stored in this rewrite.
CREATE SEQUENCE readings_id_seq AS BIGINT;
ALTER TABLE readings ADD COLUMN id BIGINT NOT NULL DEFAULT nextval('readings_id_seq');
ALTER SEQUENCE readings_id_seq OWNED BY readings.id;
-- Rows stored before this version: transaction 0, before every cursor's first position. The
-- constant default costs no rewrite; new rows get their own transaction's id.
ALTER TABLE readings ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
ALTER TABLE readings ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
ALTER TABLE events ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
CREATE INDEX readings_commit_order ON readings (xact, id);
CREATE INDEX events_commit_order ON events (xact, id);
