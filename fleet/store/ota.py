"""Over-the-air updates: releases, the OTA_UP reports nodes send, rollouts and their nodes."""

import json
import time

from . import audit
from .base import (
    DuplicateName,
    IntegrityError,
    StoreError,
    UnknownRelease,
    UnknownRollout,
    transaction,
)
from .identity import trusted_key_ids
from .scope import PLATFORM_ORG, scope_of


class UnknownKey(StoreError):
    """No signing key of that id that this organisation owns."""


# --- signing keys of organisations (the platform's are DATA_DIR/ota/trusted_keys.json) -----------


def add_org_key(db, key_id: str, public: str, actor=None) -> None:
    """Record a signing key of the connection's organisation; DuplicateName if the id is taken."""
    now = time.time()
    try:
        with transaction(db) as conn:
            conn.execute("INSERT INTO ota_keys (id, org_id, public, created, created_by)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (key_id, scope_of(db).org_id, public, now, actor))
            audit.insert(conn, now, actor, "key.create", key_id)
    except IntegrityError:
        raise DuplicateName(f"key {key_id} already exists") from None


def org_keys(db, org_id: int) -> dict[str, str]:
    """{key id: public hex} of one organisation's own keys (what its nodes trust besides the
    platform's), whatever the connection's scope."""
    return dict(db.conn.execute("SELECT id, public FROM ota_keys WHERE org_id = ? ORDER BY id",
                                (int(org_id),)).fetchall())


def org_keys_all(db) -> dict[str, str]:
    """{key id: public hex} of every organisation's keys, whatever the scope."""
    return dict(db.conn.execute("SELECT id, public FROM ota_keys").fetchall())


def list_org_keys(db) -> list[dict]:
    """Organisation keys this connection's scope owns (every organisation's for the platform),
    with the owner's name."""
    return list(db.query(
        "SELECT k.id, k.org_id, k.public, k.created, k.created_by, o.name AS org FROM ota_keys k"
        f" JOIN organisations o ON o.id = k.org_id WHERE {scope_of(db).owns('k.org_id')}"
        " ORDER BY k.id"))


def key_org(db, key_id: str) -> int | None:
    """The organisation an organisation key belongs to, whatever the scope (None: no such
    organisation key; it may be the platform's)."""
    row = db.conn.execute("SELECT org_id FROM ota_keys WHERE id = ?", (key_id,)).fetchone()
    return None if row is None else row[0]


def other_orgs_keys(db, org_id: int) -> dict[str, str]:
    """{key id: public hex} of every organisation key not of org_id (a release of org_id, or of
    the platform, must never carry one)."""
    return dict(db.conn.execute("SELECT id, public FROM ota_keys WHERE org_id <> ?",
                                (int(org_id),)).fetchall())


def delete_org_key(db, key_id: str, actor=None) -> None:
    """Forget an organisation key the connection's scope owns (any, for the platform); audited;
    UnknownKey if it owns none of that id."""
    now = time.time()
    with transaction(db) as conn:
        if conn.execute(f"DELETE FROM ota_keys WHERE id = ? AND {scope_of(db).owns()}",
                        (key_id,)).rowcount != 1:
            raise UnknownKey(f"no key {key_id} of this organisation")
        audit.insert(conn, now, actor, "key.retire", key_id)


# --- releases ------------------------------------------------------------------------------------


def add_release(db, m: dict, manifest_sha: str, actor=None, org_id=None) -> None:
    """Record a checked release (fleet/ota.py) of the connection's organisation (org_id: of
    that one, which the platform built it for); raise DuplicateName if the version exists."""
    try:
        with transaction(db) as conn:
            conn.execute(
                "INSERT INTO releases (version, key_id, boards, micropython, files, size,"
                " manifest_sha, created, created_by, runtime_micropython, downgrade_from, org_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (m["version"], m["key"], json.dumps(m["boards"]), m.get("micropython"),
                 len(m["files"]), sum(f["size"] for f in m["files"]), manifest_sha, time.time(),
                 actor, (m.get("runtime") or {}).get("micropython"), m.get("downgrade_from"),
                 scope_of(db).org_id if org_id is None else int(org_id)))
            audit.insert(conn, time.time(), actor, "release.upload", m["version"],
                         {"key": m["key"], "boards": m["boards"]})
    except IntegrityError:
        raise DuplicateName(f"release {m['version']} already exists; releases are immutable, "
                            "build a new version") from None


def _release(row: dict) -> dict:
    row["boards"] = json.loads(row["boards"])
    return row


def _releases_seen(db) -> str:
    """An organisation sees its own releases and the platform operator's (the Polylink firmware
    the platform publishes for every organisation's nodes)."""
    return f"({scope_of(db).owns()} OR org_id = {PLATFORM_ORG})"


def list_releases(db) -> list[dict]:
    return [_release(r) for r in db.query(
        f"SELECT * FROM releases WHERE {_releases_seen(db)} ORDER BY created DESC")]


def get_release(db, version: str) -> dict:
    rows = list(db.query(f"SELECT * FROM releases WHERE version = ? AND {_releases_seen(db)}",
                         [version]))
    if not rows:
        raise UnknownRelease(f"no release {version!r}")
    return _release(rows[0])


def ota_reports(db, node_id=None, after_id=0, limit=1000) -> list[dict]:
    """OTA_UP reports in arrival order (of one node; with ids above after_id)."""
    sql, args = "SELECT * FROM ota_reports WHERE id > ?", [after_id]
    if node_id is not None:
        sql += " AND node_id = ?"
        args.append(node_id)
    return list(db.query(sql + " ORDER BY id LIMIT ?", args + [limit]))


def last_ota_report_id(db) -> int:
    return db.conn.execute("SELECT coalesce(max(id), 0) FROM ota_reports").fetchone()[0]


def _rollout(row: dict) -> dict:
    row["stages"] = json.loads(row["stages"])
    row["target"] = json.loads(row["target"])
    return row


def add_rollout(db, release, stages, max_failures, max_health_drop, target, nodes, actor=None,
                now=None) -> int:
    """Create a running rollout; nodes: [(node_id, stage, state, from_version)]."""
    now = time.time() if now is None else now
    with transaction(db) as conn:
        rid = conn.execute(
            "INSERT INTO rollouts (release, state, stages, stage, stage_started, max_failures,"
            " max_health_drop, target, report_id, created, created_by, updated, org_id)"
            " VALUES (?, 'running', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (release, json.dumps(stages), now, max_failures, max_health_drop, json.dumps(target),
             conn.execute("SELECT coalesce(max(id), 0) FROM ota_reports").fetchone()[0], now,
             actor, now, scope_of(db).org_id)).fetchone()[0]
        conn.executemany(
            "INSERT INTO rollout_nodes (rollout_id, node_id, stage, state, from_version, updated)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(rid, n, st, s, v, now) for n, st, s, v in nodes])
        audit.insert(conn, now, actor, "rollout.create", f"rollout:{rid}",
                     {"release": release, "nodes": len(nodes), "target": target})
    return rid


def add_rollout_nodes(db, rid: int, nodes, actor=None, skipped=None, now=None) -> None:
    """Add nodes to a rollout ([(node_id, stage, state, from_version)]), audited with the skips."""
    now = time.time() if now is None else now
    with transaction(db) as conn:
        conn.executemany(
            "INSERT INTO rollout_nodes (rollout_id, node_id, stage, state, from_version, updated)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(rid, n, st, s, v, now) for n, st, s, v in nodes])
        conn.execute("UPDATE rollouts SET updated = ? WHERE id = ?", (now, rid))
        audit.insert(conn, now, actor, "rollout.add-nodes", f"rollout:{rid}",
                     {"added": len(nodes), "skipped": skipped or {},
                      "nodes": [n[0] for n in nodes[:20]]})


def open_rollouts(db) -> list[dict]:
    """Rollouts that still take nodes (running or paused), newest first."""
    return [_rollout(r) for r in db.query(
        "SELECT * FROM rollouts WHERE state IN ('running', 'paused')"
        f" AND {scope_of(db).owns()} ORDER BY id DESC")]


def get_rollout(db, rid: int) -> dict:
    rows = list(db.query(f"SELECT * FROM rollouts WHERE id = ? AND {scope_of(db).owns()}",
                         [rid]))
    if not rows:
        raise UnknownRollout(f"no rollout {rid}")
    return _rollout(rows[0])


def list_rollouts(db, state=None) -> list[dict]:
    sql, args = f"SELECT * FROM rollouts WHERE {scope_of(db).owns()}", []
    if state:
        sql += " AND state = ?"
        args.append(state)
    return [_rollout(r) for r in db.query(sql + " ORDER BY id DESC", args)]


def rollout_nodes(db, rid: int, state=None, limit=100000) -> list[dict]:
    sql = ("SELECT rn.*, n.firmware_version, n.micropython_version, n.online, n.last_seen,"
           " n.reset_cause, n.boots"
           " FROM rollout_nodes rn LEFT JOIN nodes n ON n.id = rn.node_id WHERE rollout_id = ?")
    args: list = [rid]
    if state:
        sql += " AND rn.state = ?"
        args.append(state)
    return list(db.query(sql + " ORDER BY rn.stage, rn.node_id LIMIT ?", args + [limit]))


def rollout_counts(db, rid: int) -> dict:
    """{stage: {state: count}} of a rollout."""
    out: dict = {}
    for stage, state, n in db.conn.execute(
            "SELECT stage, state, count(*) FROM rollout_nodes WHERE rollout_id = ?"
            " GROUP BY stage, state", (rid,)):
        out.setdefault(stage, {})[state] = n
    return out


def update_rollout(db, rid: int, actor=None, action=None, **fields) -> None:
    """Change rollout columns; with action, also write an audit entry."""
    now = time.time()
    fields["updated"] = now
    cols = ", ".join(f"{k} = ?" for k in fields)
    with transaction(db) as conn:
        conn.execute(f"UPDATE rollouts SET {cols} WHERE id = ?", [*fields.values(), rid])
        if action:
            audit.insert(conn, now, actor, action, f"rollout:{rid}",
                         {k: v for k, v in fields.items() if k != "updated"})


def set_rollout_nodes(db, rid: int, rows: list[tuple]) -> None:
    """rows: (state, offered_at, progress, reason, attempts, node_id) for nodes of rollout rid."""
    if not rows:
        return
    now = time.time()
    with transaction(db) as conn:
        conn.executemany(
            "UPDATE rollout_nodes SET state = ?, offered_at = ?, progress = ?, reason = ?,"
            " attempts = ?, updated = ? WHERE rollout_id = ? AND node_id = ?",
            [(s, o, p, r, a, now, rid, n) for s, o, p, r, a, n in rows])


# A release of an organisation goes to its nodes alone (the platform's to every node): the node
# rows of a rollout that fail this (a node moved away since) get no offer and no file.
_RELEASE_FOR_NODE = (" JOIN releases rel ON rel.version = r.release"
                     " JOIN nodes n ON n.id = rn.node_id"
                     f" AND (rel.org_id = {PLATFORM_ORG} OR rel.org_id = n.org_id)")


def rollout_offer_for(db, node_id: str) -> dict | None:
    """The offer a running rollout holds for this node now (periodic check), or None."""
    rows = list(db.query(
        "SELECT r.id, r.release FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id"
        f"{_RELEASE_FOR_NODE} WHERE rn.node_id = ? AND r.state = 'running'"
        " AND rn.stage <= r.stage AND rn.state IN ('pending', 'offered')"
        " ORDER BY r.id DESC LIMIT 1", [node_id]))
    return {"version": rows[0]["release"], "rid": rows[0]["id"]} if rows else None


def node_release_versions(db, node_id: str) -> set[str]:
    """The releases of every rollout that includes the node: the only ones it may download
    (of those, an organisation's release only while the node is that organisation's)."""
    return {row[0] for row in db.conn.execute(
        "SELECT DISTINCT r.release FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id"
        f"{_RELEASE_FOR_NODE} WHERE rn.node_id = ?", (node_id,))}


def rollouts_in_progress(db) -> list[dict]:
    """Running and paused rollouts with their node counts by state, newest first."""
    out = list(db.query(
        "SELECT id, release, state, stage, stages, created, created_by FROM rollouts"
        f" WHERE state IN ('running', 'paused') AND {scope_of(db).owns()} ORDER BY id DESC"))
    for r in out:
        r["stages"] = len(json.loads(r["stages"]))
        r["counts"] = dict(db.conn.execute(
            "SELECT state, count(*) FROM rollout_nodes WHERE rollout_id = ? GROUP BY state",
            (r["id"],)).fetchall())
        r["total"] = sum(r["counts"].values())
    return out


def node_updates(db, node_id, limit=10) -> dict:
    """A node's newest OTA reports and the rollouts it is or was in, newest first."""
    return {
        "reports": list(db.query(
            "SELECT t, state, version, progress, reason, text, rid FROM ota_reports"
            " WHERE node_id = ? ORDER BY id DESC LIMIT ?", [node_id, limit])),
        "rollouts": list(db.query(
            "SELECT r.id, r.release, r.state AS rollout_state, rn.state, rn.from_version,"
            " rn.reason, rn.updated FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id"
            " WHERE rn.node_id = ? ORDER BY r.id DESC LIMIT ?", [node_id, limit])),
        "keys": trusted_key_ids(db, [node_id]).get(node_id),
    }


def busy_nodes(db, terminal: tuple[str, ...]) -> set[str]:
    """Nodes with an update still to come (a state not in terminal) in an unfinished rollout."""
    return set(r[0] for r in db.conn.execute(
        "SELECT rn.node_id FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id"
        " WHERE r.state IN ('running', 'paused') AND rn.state NOT IN"
        f" ({','.join('?' * len(terminal))})", terminal))


def rollout_state_counts(db) -> dict[str, int]:
    """{state: count} of all rollouts (/metrics)."""
    return dict(db.conn.execute(
        f"SELECT state, count(*) FROM rollouts WHERE {scope_of(db).owns()} GROUP BY state"
    ).fetchall())
