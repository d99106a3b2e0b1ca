-- taking access back (#19): a session is valid only while it carries the user's current epoch
-- (logout, a password or role change and disabling bump it); a disabled user cannot log in;
-- a password an admin reset is one-time: it must be changed at the next login;
-- a token can be revoked, and remembers who made it so disabling that user revokes it too.
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN disabled_at REAL;
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN revoked_at REAL;
ALTER TABLE api_tokens ADD COLUMN created_by TEXT;
