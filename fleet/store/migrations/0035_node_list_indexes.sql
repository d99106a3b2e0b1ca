-- The node list on PostgreSQL (issue 15): indexes for its deep pages and its search. SQLite
-- needs none of them (its sorts and substring search run in-process within the target,
-- docs/benchmarks.md), so this file changes nothing there; migrations/postgresql/ holds the
-- PostgreSQL twin that does the work.
SELECT 1;
