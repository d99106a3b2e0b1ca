"""SenML taken in for a node, the same way over MQTT (fleet/ingest.py) and HTTPS (views.py),
and the suppliers whose clouds may post it for their own nodes."""

import hashlib
import re
import secrets
import time

from fleet.broker.auth import hash_password
from fleet.store import profiles as profile_store
from fleet.store import suppliers as supplier_store

from . import records as senml

TOKEN_PREFIX = "pls_"
RELOAD_S = 5.0
SUPPLIER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")


def token_hash(token: str) -> str:
    # A 32-byte random token needs no slow hash: nobody can guess it from its SHA-256.
    return hashlib.sha256(token.encode()).hexdigest()


def add_supplier(db, name: str, actor=None) -> str:
    """Create a supplier; returns its token (shown once, stored only as hashes). The same token
    is its password on the fleet's broker as user supplier.NAME (broker/auth.py)."""
    if not SUPPLIER_NAME.match(name or ""):
        raise ValueError(f"supplier name {name!r} must be 1-32 of a-z 0-9 -")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    profile_store.add_supplier(db, name, token_hash(token), hash_password(token), actor=actor)
    return token


def rotate_supplier(db, name: str, actor=None) -> str:
    """Give a supplier of the connection's organisation a new token (returned, shown once); the
    old one stops working at once. UnknownSupplier if it has none of that name."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    supplier_store.rotate_supplier(db, name, token_hash(token), hash_password(token),
                                   actor=actor)
    return token


def supplier(db, token: str | None) -> str | None:
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    return profile_store.supplier_of_token(db, token_hash(token))


def rotated(db, token: str | None) -> str | None:
    """Why a token that no supplier holds is refused, if it is one a rotation replaced."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    found = profile_store.supplier_rotated_from(db, token_hash(token))
    if found is None:
        return None
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(found[1]))
    return (f"this token of supplier {found[0]} was replaced on {when} (rotated): use the new"
            " token its organisation's admin was given")


class Mappings:
    """node -> its senml profile's field mapping, reloaded every RELOAD_S (for the worker)."""

    def __init__(self, db):
        self.db = db
        self.loaded = 0.0
        self.fields: dict = {}

    def of(self, node: str) -> list:
        if time.monotonic() - self.loaded >= RELOAD_S:
            self.fields = profile_store.senml_fields(self.db)
            self.loaded = time.monotonic()
        return self.fields.get(node) or []


def rows(node: str, payload: bytes, now: float, fields=()) -> tuple[list[tuple], list[str]]:
    """Store rows (node, name, t, qid, inst, value) of a pack, and why records were skipped;
    SenmlError if the pack is not SenML or none of its records names a quantity."""
    records, skipped = senml.resolve(senml.parse(payload), now)
    got, unmapped = senml.readings(records, fields)
    skipped += unmapped
    if not got:
        raise senml.SenmlError("no record of the pack maps to a registry quantity"
                               + (f" ({'; '.join(skipped[:5])})" if skipped else ""))
    return [(node, name, t, qid, inst, value) for qid, inst, value, t, name in got], skipped
