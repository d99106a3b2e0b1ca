-- exports' cursors in commit order: a cursor position is (transaction, id) of the last row a
-- destination was handed. On PostgreSQL (postgresql/0029_export_commit_order.sql) several
-- workers commit at once, so ids alone are not in commit order and readings and events carry
-- the id of the transaction that wrote them. SQLite commits one writer at a time: its rowid order
-- is commit order and the transaction part of a position stays 0.
ALTER TABLE export_cursors ADD COLUMN reading_xact INTEGER NOT NULL DEFAULT 0;
ALTER TABLE export_cursors ADD COLUMN event_xact INTEGER NOT NULL DEFAULT 0;
