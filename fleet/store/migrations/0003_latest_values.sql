-- latest value per node and quantity, so fleet pages never scan the readings.
CREATE TABLE latest (
    node_id TEXT NOT NULL,
    qid INTEGER NOT NULL,
    inst INTEGER NOT NULL,
    t REAL NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (node_id, qid, inst)
) WITHOUT ROWID;
INSERT INTO latest (node_id, qid, inst, t, value)
    SELECT node_id, qid, inst, max(t), value FROM readings GROUP BY node_id, qid, inst;
