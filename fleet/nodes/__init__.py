"""Nodes: their pages, their API, the commands sent to them and their telemetry as SenML."""
