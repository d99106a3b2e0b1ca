-- readings partitioned by time (declarative, one partition per UTC day, readings_pYYYYMMDD,
-- made ahead of time by store/telemetry.py: add_partitions): retention drops a day's partition
-- instead of deleting its rows, and a query for a time range reads only its days. Rows for a day
-- without a partition land in readings_default (and retention deletes them row by row).
ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER INDEX readings_node_qid_t RENAME TO readings_unpartitioned_node_qid_t;
CREATE TABLE readings (
    node_id TEXT NOT NULL,
    t DOUBLE PRECISION NOT NULL,
    qid BIGINT NOT NULL,
    inst BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL
) PARTITION BY RANGE (t);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
CREATE INDEX readings_node_qid_t ON readings (node_id, qid, t);
INSERT INTO readings (node_id, t, qid, inst, value)
    SELECT node_id, t, qid, inst, value FROM readings_unpartitioned;
DROP TABLE readings_unpartitioned;
