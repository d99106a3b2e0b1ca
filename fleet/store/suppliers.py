"""Suppliers as an admin manages them: list, revoke, which nodes each may write.

Creating one, its token lookup and the broker's logins sit in store/profiles.py beside the SenML
intake they serve; this module holds what the suppliers page, API and CLI add. Plain SQL both
SQLite and PostgreSQL speak (no INSERT OR IGNORE, no rowid).
"""

import time

from . import audit
from .base import StoreError, transaction
from .profiles import platform_only
from .scope import scope_of


class UnknownSupplier(StoreError):
    """No supplier with that name exists."""


def list_suppliers(db) -> list[dict]:
    """Every supplier (never its token hashes) with the ids of its nodes, by name; none for an
    organisation other than the platform's (store/profiles.py: platform_only)."""
    if not scope_of(db).platform:
        return []
    out = {r["name"]: dict(r, nodes=[]) for r in db.query(
        "SELECT name, created FROM suppliers ORDER BY name")}
    for r in db.query("SELECT id, supplier FROM nodes WHERE supplier IS NOT NULL ORDER BY id"):
        if r["supplier"] in out:
            out[r["supplier"]]["nodes"].append(r["id"])
    return list(out.values())


def revoke_supplier(db, name: str, actor=None) -> list[str]:
    """Delete a supplier, its token and broker login, and release its nodes (their readings
    stay); audited. Returns the ids of the nodes it had."""
    platform_only(db)
    now = time.time()
    with transaction(db) as conn:
        nodes = [r[0] for r in conn.execute(
            "SELECT id FROM nodes WHERE supplier = ? ORDER BY id", (name,)).fetchall()]
        if conn.execute("DELETE FROM suppliers WHERE name = ?", (name,)).rowcount == 0:
            raise UnknownSupplier(f"no supplier named {name!r}")
        conn.execute("UPDATE nodes SET supplier = NULL WHERE supplier = ?", (name,))
        audit.insert(conn, now, actor, "supplier.revoke", name, {"nodes": nodes})
    return nodes
