-- A placeholder: version 0028 belongs to another branch (pgrest, device profiles on PostgreSQL),
-- which was not merged when 0029 was written. Replace this file with that branch's 0028.
SELECT 1;
