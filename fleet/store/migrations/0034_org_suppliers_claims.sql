-- Suppliers and claim tokens per organisation (issue 18). A supplier belongs to the
-- organisation that registered it, writes only to that organisation's nodes and is seen and
-- managed by it (and the platform operator); a claim token puts the node a board claims with it
-- in the token's organisation. Existing ones stay the platform operator's (organisation 1).
ALTER TABLE suppliers ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE claim_tokens ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
-- A supplier's token can be rotated: the new one replaces it at once. The replaced token's hash
-- is kept (only the last one) so that a cloud still sending it is told "rotated", not "unknown".
ALTER TABLE suppliers ADD COLUMN rotated REAL;
ALTER TABLE suppliers ADD COLUMN old_token_hash TEXT;
