"""SenML (RFC 8428) as the fleet takes it in, and the conversion of units into SenML units that
every device profile's mapping uses. Below fleet.ingest and fleet.profiles: it imports neither."""
