-- A quota of LoRaWAN downlinks per UTC day for each organisation (issue 18): a network's
-- downlink budget is shared by every organisation's devices, so one organisation's commands
-- must not use it all. NULL: no limit (the platform operator's, and every existing one).
ALTER TABLE organisations ADD COLUMN max_downlinks_per_day INTEGER;
