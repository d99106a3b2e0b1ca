-- alert evaluation reads the last hour of STATUS reports from this covering index alone.
DROP INDEX status_log_t;
CREATE INDEX status_log_t_boots ON status_log (t, node_id, boots);
