-- The node search's trigram index (0035) was on the bare columns, and pg_trgm's GIN operator
-- class also answers `=`: the planner then took it for `id = ANY(...)` (the ingest locking a
-- batch's nodes, the node list's bulk actions) instead of the primary key. Every ingest batch
-- updates its nodes, and each update queues the row's trigrams in the GIN index's pending list,
-- which such a lookup reads whole: locking 100 nodes took 30 ms on average in a 100,000-message
-- benchmark, 280 ms after 60 batches (docs/benchmarks.md). On lower(...) the index serves only the
-- search, which says lower(column) LIKE lower(term), as ILIKE does; equality goes to the btree.
DROP INDEX nodes_search;
CREATE INDEX nodes_search ON nodes USING gin (lower(id) gin_trgm_ops, lower(name) gin_trgm_ops,
    lower(location) gin_trgm_ops);
