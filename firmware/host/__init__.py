"""The host port: the Polylink firmware on CPython with simulated hardware."""
