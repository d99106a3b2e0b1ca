"""The node's login for OTA files, derived from its MQTT password: one secret to provision, two
credentials that are useless in each other's place.

The fleet's file server accepts only this (never the MQTT password), the broker only the MQTT
password: a file credential read off a proxy's log or a captured request gets nobody onto the
broker, and SHA-256 does not give the MQTT password back. The MQTT password is 192 random bits
(fleet/broker/auth.py mint_password), so one hash is enough: there is nothing to guess.
The fleet, provisioning and a claiming node compute it; a running node reads it from config.json.
"""

import binascii
import hashlib

_DOMAIN = b"polylink ota files\x00"


def file_password(mqtt_password):
    """The hex login a node presents (HTTP Basic) to fetch OTA files."""
    h = hashlib.sha256(_DOMAIN)
    h.update(mqtt_password.encode())
    return binascii.hexlify(h.digest()).decode()
