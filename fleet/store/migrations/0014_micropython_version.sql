-- the MicroPython a node runs (STATUS field 10, sent after boot) and the one a release's
-- runtime image carries, so rollouts count a runtime update only once the node runs it; the
-- overview's covering index gains the column it now counts by.
ALTER TABLE nodes ADD COLUMN micropython_version TEXT;
ALTER TABLE releases ADD COLUMN runtime_micropython TEXT;
CREATE INDEX nodes_micropython ON nodes (micropython_version, id);
DROP INDEX nodes_overview;
CREATE INDEX nodes_overview ON nodes
    (provider, board, firmware_version, micropython_version, online, last_seen, interval, id);
