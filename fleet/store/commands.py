"""Commands to nodes: each takes the node's next downlink seq, and keeps its result."""

import json
import time

from . import audit
from .base import UnknownCommand, transaction
from .live import announce
from .nodes import owned_node
from .scope import one_node, scope_of


def create_command(db, node_id, cmd, arg, created_by, body=None) -> tuple[int, int]:
    """Record a command and take the node's next downlink seq; return (cid, seq).

    body: the fields of a CONFIG downlink ({"interval": 60, ...}), stored and audited whole.
    """
    owned_node(db, node_id)  # never a node of another organisation, nor one only shared
    now = time.time()
    with transaction(db) as conn:
        seq = conn.execute(
            "UPDATE nodes SET down_seq = down_seq + 1 WHERE id = ? RETURNING down_seq", (node_id,)
        ).fetchone()[0]
        cid = conn.execute(
            "INSERT INTO commands (node_id, cmd, arg, created_by, created, seq, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (node_id, cmd, arg, created_by, now, seq, None if body is None else json.dumps(body)),
        ).fetchone()[0]
        detail = {"cid": cid, "cmd": cmd, "arg": arg}
        if body is not None:
            detail = {"cid": cid, "cmd": cmd, **body}
        audit.insert(conn, now, created_by, "command", node_id, detail)
        announce(conn, [node_id])  # the node page's live stream lists it
    return cid, seq


def mark_command_sent(db, cid, mtype):
    """Note that the broker accepted the command's frame."""
    now = time.time()
    with transaction(db) as conn:
        row = conn.execute("SELECT node_id, seq FROM commands WHERE id = ?", (cid,)).fetchone()
        conn.execute("UPDATE commands SET sent_at = ? WHERE id = ?", (now, cid))
        announce(conn, [row[0]])
        conn.execute(
            "INSERT INTO frames (node_id, direction, seq, type, received_at, provider)"
            " VALUES (?, 'down', ?, ?, ?, 'mqtt') ON CONFLICT DO NOTHING",
            (row[0], row[1], mtype, now),
        )


def _seen_rows(db, node_id) -> str:
    """The organisation filter of a query for node node_id's commands (scope.one_node)."""
    return one_node(db, node_id, scope_of(db).sees_node_id_of_row("node_id", db.dialect))


def get_command(db, node_id, cid) -> dict:
    """One command with its result; raise UnknownCommand if it does not exist for the node."""
    rows = list(
        db.query(
            "SELECT id, node_id, cmd, arg, created_by, created, seq, sent_at, result_code,"
            " result_value, result_text, result_at, body FROM commands WHERE id = ?"
            f" AND node_id = ? AND {_seen_rows(db, node_id)}",
            [cid, node_id],
        )
    )
    if not rows:
        raise UnknownCommand(f"no command {cid} for node {node_id!r}")
    return _command_row(rows[0])


def _command_row(row: dict) -> dict:
    row["body"] = json.loads(row["body"]) if row.get("body") else None
    return row


def list_commands(db, node_id, limit=20) -> list[dict]:
    """A node's most recent commands, newest first."""
    return [_command_row(r) for r in db.query(
        "SELECT id, cmd, arg, created_by, created, sent_at, result_code, result_value,"
        " result_text, result_at, body FROM commands WHERE node_id = ?"
        f" AND {_seen_rows(db, node_id)} ORDER BY id DESC LIMIT ?",
        [node_id, limit])]


def last_config(db, node_id) -> dict | None:
    """The node's newest CONFIG command with its fields and result, or None."""
    rows = list(db.query(
        "SELECT id, arg, created, created_by, sent_at, result_code, result_value, result_text,"
        " result_at, body FROM commands INDEXED BY commands_node WHERE node_id = ?"
        " AND cmd = 'config' ORDER BY id DESC LIMIT 1", [node_id]))
    if not rows:
        return None
    row = _command_row(rows[0])
    if row["body"] is None:  # sent before schema 13 kept the fields: only the interval is known
        row["body"] = {} if row["arg"] is None else {"interval": row["arg"]}
    return row


def take_down_seqs(db, node_ids: list[str]) -> dict[str, int]:
    """Take the next downlink seq of each node (one transaction); return {node: seq}."""
    out = {}
    with transaction(db) as conn:
        for n in node_ids:
            row = conn.execute("UPDATE nodes SET down_seq = down_seq + 1 WHERE id = ?"
                               " RETURNING down_seq", (n,)).fetchone()
            if row:
                out[n] = row[0]
    return out


def recent_results(db, node_id, limit=20) -> list[dict]:
    """The results of a node's newest commands (the node page's live stream), newest first."""
    return list(db.query(
        "SELECT id, result_code, result_value, result_text, result_at, sent_at FROM commands"
        " WHERE node_id = ? ORDER BY id DESC LIMIT ?", [node_id, limit]))
