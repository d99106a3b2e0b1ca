-- the ids of the update keys a node said it trusts when it last confirmed an update
-- (OTA_UP `keys`, comma-separated); NULL: as provisioned (node_credentials.ota_keys).
ALTER TABLE nodes ADD COLUMN ota_keys TEXT;
