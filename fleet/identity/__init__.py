"""Node identities: registration, MQTT logins, zero-touch claims; their API, pages, commands."""
