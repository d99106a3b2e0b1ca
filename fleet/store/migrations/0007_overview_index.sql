-- the overview's counts read this narrow index instead of 10,000 wide node rows.
CREATE INDEX nodes_overview ON nodes
    (provider, board, firmware_version, online, last_seen, interval, id);
