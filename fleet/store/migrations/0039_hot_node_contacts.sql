-- PostgreSQL updates a node's row in place of its indexes (a HOT update) when no indexed column
-- changes; every contact changes last_seen (issue 15). SQLite rewrites only the index entries of
-- the columns that changed: nothing to do here; migrations/postgresql/ holds the twin.
SELECT 1;
