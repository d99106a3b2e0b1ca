"""Suppliers as an admin manages them: list, rotate, revoke, which nodes each may write.

Creating one, its token lookup and the broker's logins sit in store/profiles.py beside the SenML
intake they serve; this module holds what the suppliers page, API and CLI add. A supplier
belongs to one organisation (migration 0034): the scope's owns() decides which ones a
connection sees and changes. Plain SQL both SQLite and PostgreSQL speak.
"""

import time

from . import audit
from .base import StoreError, transaction
from .scope import scope_of


class UnknownSupplier(StoreError):
    """No supplier with that name exists (in the connection's organisation)."""


def list_suppliers(db) -> list[dict]:
    """The scope's suppliers (never their token hashes) with the ids of their nodes, by name;
    the platform's scope sees every organisation's, each with its org_id and org (name)."""
    out = {r["name"]: dict(r, nodes=[]) for r in db.query(
        "SELECT s.name, s.created, s.rotated, s.org_id, o.name AS org FROM suppliers s"
        f" JOIN organisations o ON o.id = s.org_id WHERE {scope_of(db).owns('s.org_id')}"
        " ORDER BY s.name")}
    for r in db.query("SELECT n.id, n.supplier FROM nodes n JOIN suppliers s"
                      " ON s.name = n.supplier AND s.org_id = n.org_id ORDER BY n.id"):
        if r["supplier"] in out:
            out[r["supplier"]]["nodes"].append(r["id"])
    return list(out.values())


def _owner(conn, name: str) -> int:
    """The organisation of a supplier the scope owns; UnknownSupplier for any other."""
    row = conn.execute(f"SELECT org_id FROM suppliers WHERE name = ? AND {scope_of(conn).owns()}",
                       (name,)).fetchone()
    if row is None:
        raise UnknownSupplier(f"no supplier named {name!r}")
    return row[0]


def rotate_supplier(db, name: str, token_hash: str, mqtt_hash: str, actor=None) -> None:
    """Replace a supplier's token hashes: the old token stops working now (HTTPS at once, the
    broker when its files are rewritten); audited. Only the replaced token's SHA-256 is kept,
    to tell a cloud still sending it that it was rotated."""
    now = time.time()
    with transaction(db) as conn:
        owner = _owner(conn, name)
        conn.execute("UPDATE suppliers SET old_token_hash = token_hash, token_hash = ?,"
                     " mqtt_hash = ?, rotated = ? WHERE name = ?",
                     (token_hash, mqtt_hash, now, name))
        audit.insert(conn, now, actor, "supplier.rotate", name, owner=owner)


def revoke_supplier(db, name: str, actor=None) -> list[str]:
    """Delete a supplier, its token and broker login, and release its nodes (their readings
    stay); audited. Returns the ids of the nodes it had."""
    now = time.time()
    with transaction(db) as conn:
        owner = _owner(conn, name)
        conn.execute("DELETE FROM suppliers WHERE name = ?", (name,))
        nodes = [r[0] for r in conn.execute(
            "SELECT id FROM nodes WHERE supplier = ? ORDER BY id", (name,)).fetchall()]
        conn.execute("UPDATE nodes SET supplier = NULL WHERE supplier = ?", (name,))
        audit.insert(conn, now, actor, "supplier.revoke", name, {"nodes": nodes}, owner=owner)
    return nodes
