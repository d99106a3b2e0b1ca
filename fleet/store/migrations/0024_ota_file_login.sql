-- The login nodes present for OTA files: a hash of a credential derived from the MQTT password
-- (polylink/ota/credential.py), so neither works in the other's place. NULL for nodes registered
-- before: they still fetch files with their MQTT login until their next flashing or rotation.
ALTER TABLE node_credentials ADD COLUMN ota_hash TEXT;
