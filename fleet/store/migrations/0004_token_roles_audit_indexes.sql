-- roles for API tokens (tokens made before had the operator's powers, and keep them);
-- audit log searchable by who and by what.
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'operator';
CREATE INDEX audit_actor ON audit (actor, id);
CREATE INDEX audit_target ON audit (target, id);
