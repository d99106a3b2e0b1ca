-- Every contact (a frame, a conn "1") sets a node's last_seen, and a telemetry frame with a
-- battery reading its battery. With those columns in an index, each such update is a new row
-- version with an entry in every index of `nodes` (nine btrees and two GIN, the search's
-- trigrams among them): at 10,000 nodes that was a third of the server's CPU in an ingest drain
-- (docs/benchmarks.md). Out of every index, and with room left on each page for the new
-- version, the update is HOT: no index entry at all. What the indexes did, a scan now does:
-- the node list sorted by last seen or battery sorts the nodes it shows, and the overview's
-- counts read the node rows (measured side by side in docs/benchmarks.md, "Contacts as HOT
-- updates", tests/bench/bench_pg_node_indexes.py; an index-only scan rarely stayed one here
-- anyway, since the visibility map of a table updated every second is seldom all-visible).
DROP INDEX nodes_last_seen;
DROP INDEX nodes_battery;
DROP INDEX nodes_overview;
-- Room on every page for updated versions. Pages written before keep none: a node's first
-- update after this moves it to a page with room, and its later ones are HOT.
ALTER TABLE nodes SET (fillfactor = 50);
-- Latest values: the same for the upsert of a node's newest reading per quantity (its one index,
-- the primary key, never changes on update). A batch over many nodes rewrites every row of a
-- page once: half the page is the room that takes.
ALTER TABLE latest SET (fillfactor = 50);
