-- A placeholder: version 0028 belongs to another branch (org, 0028_organisations.sql), which was
-- not merged when 0029 was written on this one. Replace this file with that branch's 0028.
SELECT 1;
