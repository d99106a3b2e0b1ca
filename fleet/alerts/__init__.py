"""Alerts: the pages and API that list, acknowledge and resolve them."""
