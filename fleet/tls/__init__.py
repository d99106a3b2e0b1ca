"""TLS for nodes: the fleet's private CA and server certificate, or the operator's (certs.py)."""
