"""All SQL of the fleet, one module per domain; importing this package loads none of them.

base holds the connection, transactions and the errors; migrate.py brings a database's schema
up to date from the numbered files in migrations/; every other module holds every statement of
its domain (nodes, telemetry, commands, alerts, users, audit, identity, ota, providers, upkeep).
"""
