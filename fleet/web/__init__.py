"""The web UI's shared parts: the /api/v1 parent blueprint, logins, admin, overview."""
