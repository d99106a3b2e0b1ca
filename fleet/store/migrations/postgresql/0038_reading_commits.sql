-- Readings in commit order for the exports (fleet/store/exports.py) without an index entry per
-- reading. The (xact, id) btree of 0029 cost the ingest ~0.8 us of server time per reading, a
-- sixth of PostgreSQL's whole share (docs/benchmarks.md); ingest writes many readings per
-- transaction, so a row per transaction is cheap where a row per reading was not.
--
-- reading_commits: one row per transaction that stored readings, with a span of ids that holds
-- all of them (it may hold other transactions' rows too: two writers take ids side by side, and
-- a reader keeps only the rows of the span's own xact). Statement triggers fill it, so every
-- writer (ingest COPY, SenML, a hand-made INSERT) is logged without knowing of it:
-- - before the statement: the span starts at the sequence's last value, at or below every id
--   the statement will take (this needs the sequence's CACHE 1, its default: with a cache a
--   session could hand out ids below the last value);
-- - after it: the span ends at the sequence's last value then, at or above every id it took.
-- A span's rows are found by a btree on id alone: ids grow, so each reading's entry goes on the
-- index's rightmost page (PostgreSQL's fast path for it), cheaper than (xact, id) was. (A BRIN
-- index on id cost less still, but every read scanned all of the table's unsummarized tail,
-- which is the whole of a fresh backlog: an export drain on it ran at 0.66x its old speed.)
-- Rows stored with ids of their own (fleet db copy, the rows before this version: xact 0) are
-- logged by the same GROUP BY as below (exports.LOG_READING_COMMITS).
CREATE TABLE reading_commits (
    xact xid8 PRIMARY KEY,
    first_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL DEFAULT CAST(extract(epoch FROM now()) AS double precision)
);
INSERT INTO reading_commits (xact, first_id, last_id)
    SELECT xact, min(id), max(id) FROM readings GROUP BY xact;
-- (Function bodies in single quotes, and CREATE OR REPLACE TRIGGER: the migration runner splits
-- scripts by SQLite's idea of a statement, which ends a CREATE TRIGGER only at END.)
CREATE FUNCTION reading_commit_opens() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    INSERT INTO reading_commits (xact, first_id, last_id)
        SELECT pg_current_xact_id(), last_value, last_value FROM readings_id_seq
        ON CONFLICT (xact) DO NOTHING;
    RETURN NULL;
END';
CREATE FUNCTION reading_commit_closes() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    UPDATE reading_commits
        SET last_id = greatest(last_id, (SELECT last_value FROM readings_id_seq))
        WHERE xact = pg_current_xact_id();
    RETURN NULL;
END';
CREATE OR REPLACE TRIGGER reading_commit_opens BEFORE INSERT ON readings
    FOR EACH STATEMENT EXECUTE FUNCTION reading_commit_opens();
CREATE OR REPLACE TRIGGER reading_commit_closes AFTER INSERT ON readings
    FOR EACH STATEMENT EXECUTE FUNCTION reading_commit_closes();
DROP INDEX readings_commit_order;
CREATE INDEX readings_id ON readings (id);
