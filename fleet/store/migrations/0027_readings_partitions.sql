-- readings in time partitions, on PostgreSQL only (postgresql/0022_readings_partitions.sql):
-- SQLite has no partitions, so this version changes nothing there. The statement below only
-- keeps the two histories at the same number.
SELECT 1;
