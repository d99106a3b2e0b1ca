"""The audit log: who did what to which target, appended by every audited change."""

import json
import time

from .base import Database, transaction

_INSERT = "INSERT INTO audit (t, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)"


def insert(conn, t: float, actor, action: str, target=None, detail=None) -> None:
    """Append an entry inside the caller's transaction (detail: anything json.dumps takes)."""
    conn.execute(_INSERT, (t, actor, action, target,
                           None if detail is None else json.dumps(detail)))


def audit(db: Database, actor, action, target=None, detail=None):
    """Append one entry to the audit log."""
    with transaction(db) as conn:
        insert(conn, time.time(), actor, action, target, detail)


def audit_log(db: Database, limit=100, actor=None, target=None, before=None) -> list[dict]:
    """Most recent audit entries (of one actor and/or target; ids below `before`), newest first."""
    sql, args = "SELECT * FROM audit WHERE true", []
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
