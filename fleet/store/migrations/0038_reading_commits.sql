-- PostgreSQL finds readings in commit order through a log of the transactions that wrote them
-- instead of an index entry per reading (issue 15). SQLite's rowid order is its commit order:
-- nothing changes there; migrations/postgresql/ holds the twin that does the work.
SELECT 1;
