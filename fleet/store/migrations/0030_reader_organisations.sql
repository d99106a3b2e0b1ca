-- Integrators' read-only MQTT logins (export_readers) belong to an organisation like every other
-- login (0028): the broker's ACL gives one only the data topics of nodes its organisation may
-- read. Existing logins are the platform operator's (organisation 1), which reads every node.
ALTER TABLE export_readers ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
