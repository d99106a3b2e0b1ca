-- the newer version a release signed as a downgrade may replace (its manifest's downgrade_from),
-- so a rollout of an older release is refused for every other node before any offer goes out.
ALTER TABLE releases ADD COLUMN downgrade_from TEXT;
