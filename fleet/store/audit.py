"""The audit log: who did what to which target, appended by every audited change."""

import json
import time

from .base import Database, transaction
from .scope import scope_of

_INSERT = ("INSERT INTO audit (t, actor, action, target, detail, org_id)"
           " VALUES (?, ?, ?, ?, ?, ?)")


def insert(conn, t: float, actor, action: str, target=None, detail=None, owner=None) -> None:
    """Append an entry inside the caller's transaction (detail: anything json.dumps takes); it
    belongs to the organisation of the connection's scope, and also to owner's, the
    organisation whose object it is, when that is another (the platform acting on it)."""
    own = scope_of(conn).org_id
    insert_for(conn, dict.fromkeys((own, owner if owner is not None else own)), t, actor,
               action, target, detail)


def insert_for(conn, org_ids, t: float, actor, action: str, target=None, detail=None) -> None:
    """The same entry once in each of org_ids' logs, inside the caller's transaction (a node
    moved between two organisations is in both their histories)."""
    text = None if detail is None else json.dumps(detail)
    for org_id in org_ids:
        conn.execute(_INSERT, (t, actor, action, target, text, org_id))


def audit(db: Database, actor, action, target=None, detail=None):
    """Append one entry to the audit log."""
    with transaction(db) as conn:
        insert(conn, time.time(), actor, action, target, detail)


def audit_log(db: Database, limit=100, actor=None, target=None, before=None) -> list[dict]:
    """Most recent audit entries (of one actor and/or target; ids below `before`), newest first."""
    sql, args = f"SELECT * FROM audit WHERE {scope_of(db).owns()}", []
    for column, value in (("actor", actor), ("target", target)):
        if value:
            sql += f" AND {column} = ?"
            args.append(value)
    if before is not None:
        sql += " AND id < ?"
        args.append(before)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return list(db.query(sql, args))
