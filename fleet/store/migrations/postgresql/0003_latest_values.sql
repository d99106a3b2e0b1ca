-- PostgreSQL twin of ../0003_latest_values.sql: SQLite takes the bare `value` of the max(t)
-- row in a GROUP BY; PostgreSQL says which row with DISTINCT ON.
CREATE TABLE latest (
    node_id TEXT NOT NULL,
    qid BIGINT NOT NULL,
    inst BIGINT NOT NULL,
    t DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, qid, inst)
);
INSERT INTO latest (node_id, qid, inst, t, value)
    SELECT DISTINCT ON (node_id, qid, inst) node_id, qid, inst, t, value FROM readings
    ORDER BY node_id, qid, inst, t DESC;
