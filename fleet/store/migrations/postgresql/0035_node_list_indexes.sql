-- The node list on PostgreSQL (issue 15, tests/bench/bench_pg_web.py).
-- Deep pages: the list orders by a column with id breaking ties, and PostgreSQL spells it
-- `battery ASC NULLS LAST, id` (store/nodes.py), which an index on (column, id) returns in order,
-- so page 100 reads 5,000 index entries instead of sorting every node. The other sort columns
-- (provider, board, firmware, MicroPython) had such an index already.
DROP INDEX nodes_battery;
CREATE INDEX nodes_battery ON nodes (battery, id);
DROP INDEX nodes_last_seen;
CREATE INDEX nodes_last_seen ON nodes (last_seen, id);
-- Search: a substring (ILIKE '%term%') of id, name or location, or a tag equal to the term.
-- Trigram indexes (pg_trgm, a contrib extension shipped with PostgreSQL and marked trusted: the
-- database's owner may create it without being a superuser) answer the ILIKEs, a jsonb index the
-- tag, so the four branches of the OR become one bitmap scan instead of a scan of every node.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX nodes_search ON nodes USING gin (id gin_trgm_ops, name gin_trgm_ops,
    location gin_trgm_ops);
CREATE INDEX nodes_tags ON nodes USING gin ((tags::jsonb) jsonb_path_ops);
