-- Issue 15: the fleet as several processes on one store.
--
-- Login attempts counted in the store, so every web process shares one count (an attacker
-- spreading guesses over N processes gets no more than against one). One row per limited
-- subject (an address, or an address with a user name), named by an HMAC of it under the
-- fleet's secret key: a name typed at the login form (sometimes a password typed in the wrong
-- field) is never kept in clear. `attempts` counts the attempts of the window that began at
-- `since` and ends at `until`; upkeep deletes rows whose window has ended.
CREATE TABLE login_attempts (
    subject TEXT PRIMARY KEY,
    since REAL NOT NULL,
    until REAL NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX login_attempts_until ON login_attempts (until);
-- The provider's own identity of the uplink message a reception came in (ChirpStack's
-- deduplicationId, The Things Stack's as:up correlation id, each with the FCnt): the same
-- message delivered again (a broker's redelivery, a second worker) adds no second reception.
-- NULL for messages without one (and rows stored before): they are not deduplicated.
ALTER TABLE receptions ADD COLUMN uplink_key TEXT;
CREATE UNIQUE INDEX receptions_uplink ON receptions (provider, uplink_key, coalesce(gateway, ''))
    WHERE uplink_key IS NOT NULL;
