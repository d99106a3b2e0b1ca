"""Runs before main.py on every boot; OTA slot selection will live here."""
