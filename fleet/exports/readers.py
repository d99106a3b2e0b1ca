"""Integrators' read-only MQTT logins: subscribe to pl/v1/data/{node} on the fleet's broker.

A login belongs to the organisation it was made in and may read the data topics of the nodes it
was given (by id or tag; none: all nodes) that its organisation may read, and nothing else; it
can publish nowhere (fleet/broker/auth.py writes its ACL). Its password is
minted here, shown once and kept only as mosquitto's hash.
"""

import time

from fleet.broker import auth as brokerauth
from fleet.store import audit as audit_store
from fleet.store import exports as export_store
from fleet.store.base import DuplicateName, valid_node_id

from .adapter import ExportError
from .registry import NAME_CHARS


def _names(value, what, valid) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, type(None))):
        raise ExportError(f"{what} must be a list of {what}")
    value = list(value or [])
    if not all(isinstance(v, str) and valid(v) for v in value):
        raise ExportError(f"{what} must be a list of {what}")
    return sorted(set(value))


def add(db, broker_dir, name: str, nodes=(), tags=(), actor=None) -> dict:
    """Create (or give a new password to) a login; returns it with the password, shown once."""
    if not isinstance(name, str) or not 1 <= len(name) <= 24 or not set(name) <= NAME_CHARS:
        raise ExportError("name must be 1..24 characters of a-z, 0-9 and '-'")
    nodes = _names(nodes, "nodes", valid_node_id)
    tags = _names(tags, "tags", lambda t: 0 < len(t) <= 64)
    password = brokerauth.mint_password()
    try:
        export_store.save_reader(db, name, brokerauth.hash_password(password), nodes, tags,
                                 time.time())
    except DuplicateName as e:
        raise ExportError(str(e)) from None
    audit_store.audit(db, actor, "export.reader.set", name, {"nodes": nodes, "tags": tags})
    brokerauth.sync(db, broker_dir)
    return {"name": name, "username": brokerauth.READER_PREFIX + name, "password": password,
            "nodes": nodes, "tags": tags}


def list_all(db) -> list[dict]:
    """Logins (never a password or hash) with the topics each may read now."""
    return [{"name": r["name"], "username": brokerauth.READER_PREFIX + r["name"],
             "nodes": r["nodes"], "tags": r["tags"], "created": r["created"],
             "topics": brokerauth.reader_topics(r)} for r in export_store.readers(db)]


def remove(db, broker_dir, name: str, actor=None) -> None:
    if not export_store.delete_reader(db, name):
        raise KeyError(name)
    audit_store.audit(db, actor, "export.reader.remove", name)
    brokerauth.sync(db, broker_dir)
