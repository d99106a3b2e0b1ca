-- the network's ACKs of confirmed uplinks are downlinks too and use the same daily
-- budget (TTN fair use): one row per acknowledged uplink (kind 'ack'), at most one per
-- (node, provider, seq, FCnt) however many gateways or MQTT redeliveries brought it.
ALTER TABLE provider_downlinks ADD COLUMN kind TEXT NOT NULL DEFAULT 'fleet';
ALTER TABLE provider_downlinks ADD COLUMN seq INTEGER;
ALTER TABLE provider_downlinks ADD COLUMN fcnt INTEGER;
CREATE UNIQUE INDEX provider_downlinks_ack ON provider_downlinks (node_id, provider, seq, fcnt)
    WHERE kind = 'ack';
