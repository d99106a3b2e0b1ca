-- PostgreSQL's node search index on lower(id|name|location) instead of the columns themselves
-- (issue 15). SQLite has no such index; migrations/postgresql/ holds the twin that does the work.
SELECT 1;
