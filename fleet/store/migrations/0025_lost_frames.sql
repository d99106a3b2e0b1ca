-- frames a node failed to encode or to queue in its flash since boot (STATUS field 11 lost,
-- docs/protocol.md): the node's latest count, and each report in the log for the frames_lost
-- alert, which looks at the last hour.
ALTER TABLE nodes ADD COLUMN lost INTEGER;
ALTER TABLE status_log ADD COLUMN lost INTEGER;
