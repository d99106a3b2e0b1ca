"""Organisations, who belongs to which with what role, and their quotas.

The organisation filter itself (the Scope every query takes) is scope.py.
"""

import time

from . import audit
from .base import DuplicateName, IntegrityError, StoreError, UnknownNode, first, transaction
from .nodes import check_room
from .scope import PLATFORM_ORG, Scope, forget_readable, scope_of


class UnknownOrganisation(StoreError):
    """No organisation with that name or id exists."""


class NotAMember(StoreError):
    """The user holds no role in that organisation."""


class PlatformOnly(StoreError):
    """Only the platform operator's organisation may do this (it changes organisations)."""


def _require_platform(db, what: str) -> None:
    if not scope_of(db).platform:
        raise PlatformOnly(f"{what} is the platform operator's to do")


def _own_organisation(db, name: str) -> dict:
    """The organisation by name if the connection acts for it (or for the platform); else
    UnknownOrganisation, worded as for one that does not exist, so the name's existence does
    not leak."""
    org = get_organisation(db, name)
    scope = scope_of(db)
    if not scope.platform and org["id"] != scope.org_id:
        raise UnknownOrganisation(f"unknown organisation {name!r}")
    return org


# --- organisations ------------------------------------------------------------------------------

def list_organisations(db) -> list[dict]:
    """Every organisation this connection may see (the platform's sees all), by name, with its
    node and member counts."""
    scope = scope_of(db)
    return list(db.query(
        "SELECT o.id, o.name, o.platform, o.max_nodes, o.max_requests_per_minute,"
        " o.max_downlinks_per_day, o.created,"
        " (SELECT count(*) FROM nodes n WHERE n.org_id = o.id) AS nodes,"
        " (SELECT count(*) FROM memberships m WHERE m.org_id = o.id) AS members"
        f" FROM organisations o WHERE {scope.owns('o.id')} ORDER BY o.platform DESC, o.name"))


def get_organisation(db, name_or_id) -> dict:
    """One organisation by name or id; UnknownOrganisation if none."""
    column = "id" if isinstance(name_or_id, int) else "name"
    row = first(db, f"SELECT * FROM organisations WHERE {column} = ?", [name_or_id])
    if row is None:
        raise UnknownOrganisation(f"unknown organisation {name_or_id!r}")
    return row


def add_organisation(db, name: str, max_nodes=None, max_requests_per_minute=None,
                     actor=None, max_downlinks_per_day=None) -> int:
    """Create an organisation (never a second platform one); return its id."""
    _require_platform(db, "adding an organisation")
    try:
        with transaction(db) as conn:
            conn.execute("INSERT INTO organisations (name, max_nodes, max_requests_per_minute,"
                         " max_downlinks_per_day, created) VALUES (?, ?, ?, ?, ?)",
                         (name, max_nodes, max_requests_per_minute, max_downlinks_per_day,
                          time.time()))
            org_id = conn.execute("SELECT id FROM organisations WHERE name = ?",
                                  (name,)).fetchone()[0]
            audit.insert(conn, time.time(), actor, "org.add", name,
                         {"max_nodes": max_nodes,
                          "max_requests_per_minute": max_requests_per_minute,
                          "max_downlinks_per_day": max_downlinks_per_day})
    except IntegrityError:
        raise DuplicateName(f"organisation {name!r} already exists") from None
    return org_id


def set_quotas(db, name: str, max_nodes=None, max_requests_per_minute=None, actor=None,
               max_downlinks_per_day=None) -> None:
    """Set (None: no limit) an organisation's quotas; audited."""
    _require_platform(db, "setting quotas")
    with transaction(db) as conn:
        if conn.execute("UPDATE organisations SET max_nodes = ?, max_requests_per_minute = ?,"
                        " max_downlinks_per_day = ? WHERE name = ?",
                        (max_nodes, max_requests_per_minute, max_downlinks_per_day, name)
                        ).rowcount != 1:
            raise UnknownOrganisation(f"unknown organisation {name!r}")
        audit.insert(conn, time.time(), actor, "org.quotas", name,
                     {"max_nodes": max_nodes, "max_requests_per_minute": max_requests_per_minute,
                      "max_downlinks_per_day": max_downlinks_per_day})


def downlink_quota_of_node(db, node_id: str) -> tuple[str, int | None]:
    """(organisation name, its LoRaWAN downlinks per day or None for no limit) of a node's
    organisation."""
    row = db.conn.execute(
        "SELECT o.name, o.max_downlinks_per_day FROM organisations o JOIN nodes n"
        " ON n.org_id = o.id WHERE n.id = ?", (node_id,)).fetchone()
    return (row[0], row[1]) if row else ("", None)


# --- memberships --------------------------------------------------------------------------------

def memberships(db, user_id: int) -> list[dict]:
    """The organisations a user belongs to, with their role in each (the platform's first)."""
    return list(db.query(
        "SELECT o.id, o.name, o.platform, m.role FROM memberships m"
        " JOIN organisations o ON o.id = m.org_id WHERE m.user_id = ?"
        " ORDER BY o.platform DESC, o.name", [user_id]))


def membership(db, user_id: int, org_id: int) -> dict | None:
    """{"id", "name", "platform", "role"} of the user in that organisation, or None."""
    return first(db, "SELECT o.id, o.name, o.platform, m.role FROM memberships m"
                     " JOIN organisations o ON o.id = m.org_id"
                     " WHERE m.user_id = ? AND m.org_id = ?", [user_id, org_id])


def set_member(db, user_name: str, org_name: str, role: str, actor=None) -> None:
    """Give a user a role in an organisation (or change it); their sessions end; audited."""
    org = _own_organisation(db, org_name)
    with transaction(db) as conn:
        row = conn.execute("SELECT id FROM users WHERE name = ?", (user_name,)).fetchone()
        if row is None:
            raise StoreError(f"unknown user {user_name!r}")
        conn.execute("INSERT INTO memberships (user_id, org_id, role) VALUES (?, ?, ?)"
                     " ON CONFLICT (user_id, org_id) DO UPDATE SET role = excluded.role",
                     (row[0], org["id"], role))
        conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = ?", (row[0],))
        audit.insert(conn, time.time(), actor, "org.member", user_name,
                     {"org": org_name, "role": role})


def remove_member(db, user_name: str, org_name: str, actor=None) -> None:
    """Take a user's role in an organisation away; their sessions end; audited."""
    org = _own_organisation(db, org_name)
    with transaction(db) as conn:
        changed = conn.execute(
            "DELETE FROM memberships WHERE org_id = ? AND user_id ="
            " (SELECT id FROM users WHERE name = ?)", (org["id"], user_name)).rowcount
        if changed != 1:
            raise NotAMember(f"user {user_name!r} is not a member of {org_name!r}")
        conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE name = ?",
                     (user_name,))
        audit.insert(conn, time.time(), actor, "org.unmember", user_name, {"org": org_name})


def count_request(db, org_id: int, now: float) -> int:
    """Count one API request of the organisation in this minute; return the minute's count."""
    minute = int(now // 60)
    with transaction(db) as conn:
        conn.execute("DELETE FROM api_usage WHERE org_id = ? AND minute < ?", (org_id, minute))
        return conn.execute(
            "INSERT INTO api_usage (org_id, minute, requests) VALUES (?, ?, 1)"
            " ON CONFLICT (org_id, minute) DO UPDATE SET requests = api_usage.requests + 1"
            " RETURNING requests", (org_id, minute)).fetchone()[0]


def org_of_node(db, node_id: str) -> int | None:
    """The organisation owning a node, whatever the connection's scope (a node's own login
    decides its scope with it), or None if no such node."""
    row = db.conn.execute("SELECT org_id FROM nodes WHERE id = ?", (node_id,)).fetchone()
    return None if row is None else row[0]


def scope_for(db, org_id: int) -> Scope:
    """The scope of an organisation: everything for the platform's, else only its own."""
    org = get_organisation(db, int(org_id))
    return Scope(org["id"], platform=bool(org["platform"]))


# --- sharing and moving -------------------------------------------------------------------------

def share(db, org_name: str, grantee_name: str, node_id=None, tag=None, actor=None) -> int:
    """Let another organisation read one node (node_id) or every node with a tag (tag) of
    org_name; audited; return the grant's id. The grantee can read, never command."""
    if (node_id is None) == (tag is None):
        raise StoreError("share either one node (node_id) or a tag, not both or neither")
    org, grantee = _own_organisation(db, org_name), get_organisation(db, grantee_name)
    if org["id"] == grantee["id"]:
        raise StoreError("an organisation cannot share with itself")
    now = time.time()
    with transaction(db) as conn:
        if node_id is not None and conn.execute(
                "SELECT 1 FROM nodes WHERE id = ? AND org_id = ?", (node_id, org["id"])
        ).fetchone() is None:
            raise StoreError(f"organisation {org_name!r} has no node {node_id!r}")
        grant = conn.execute(
            "INSERT INTO shares (org_id, grantee_org_id, node_id, tag, created, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (org["id"], grantee["id"], node_id, tag, now, actor)).fetchone()[0]
        audit.insert(conn, now, actor, "org.share", org_name,
                     {"grant": grant, "to": grantee_name, "node": node_id, "tag": tag})
    return grant


def revoke_share(db, grant: int, actor=None) -> None:
    """End a grant the connection's organisation gave (any, for the platform); audited."""
    now = time.time()
    given = scope_of(db).owns()
    with transaction(db) as conn:
        if conn.execute("UPDATE shares SET revoked_at = ?, revoked_by = ? WHERE id = ?"
                        f" AND revoked_at IS NULL AND {given}", (now, actor, grant)
                        ).rowcount != 1:
            raise StoreError(f"no live grant {grant}")
        forget_readable(conn)
        audit.insert(conn, now, actor, "org.unshare", str(grant))


def list_shares(db) -> list[dict]:
    """Grants given or received by the connection's organisation (all for the platform's),
    newest first, revoked ones too."""
    scope = scope_of(db)
    mine = ("true" if scope.platform
            else f"(s.org_id = {int(scope.org_id)} OR s.grantee_org_id = {int(scope.org_id)})")
    return list(db.query(
        "SELECT s.*, o.name AS org, g.name AS grantee FROM shares s"
        " JOIN organisations o ON o.id = s.org_id JOIN organisations g ON g.id = s.grantee_org_id"
        f" WHERE {mine} ORDER BY s.id DESC"))


def move_node(db, node_id: str, to_org: str, actor=None) -> None:
    """Move a node to another organisation with its identity and history (readings, alerts,
    commands follow its id); grants of it end; audited in both organisations. The platform
    operator's to do at once; organisations ask each other (request_move)."""
    _require_platform(db, "moving a node straight away")
    target = get_organisation(db, to_org)
    with transaction(db) as conn:
        row = conn.execute("SELECT org_id FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise StoreError(f"unknown node {node_id!r}")
        if row[0] == target["id"]:
            raise StoreError(f"node {node_id!r} is already in {to_org!r}")
        _move(conn, node_id, row[0], target["id"], time.time(), actor)


def _move(conn, node_id: str, from_org: int, to_org: int, now: float, actor) -> None:
    """The move itself, inside the caller's transaction."""
    check_room(conn, to_org)
    conn.execute("UPDATE nodes SET org_id = ? WHERE id = ?", (to_org, node_id))
    forget_readable(conn)
    conn.execute("UPDATE alerts SET org_id = ? WHERE node_id = ?", (to_org, node_id))
    conn.execute("UPDATE shares SET revoked_at = ?, revoked_by = ? WHERE node_id = ?"
                 " AND revoked_at IS NULL", (now, actor, node_id))
    # The old organisation's unfinished rollouts, and any of its releases, stop at the node: it
    # is offered nothing more of them (a node already rebooting into one finishes its trial).
    # Its update keys change only with the next release it confirms (docs/ota.md).
    conn.execute(
        "UPDATE rollout_nodes SET state = 'skipped', reason = 'moved to another organisation',"
        " updated = ? WHERE node_id = ? AND state IN ('pending', 'offered', 'downloading',"
        " 'verified', 'deferred') AND rollout_id IN (SELECT r.id FROM rollouts r JOIN releases"
        " rel ON rel.version = r.release WHERE r.state IN ('running', 'paused') AND"
        f" ((r.org_id = ? AND r.org_id <> {PLATFORM_ORG})"
        f" OR (rel.org_id = ? AND rel.org_id <> {PLATFORM_ORG})))",
        (now, node_id, from_org, from_org))
    _audit_both(conn, now, actor, "node.move", node_id, {"from": from_org, "to": to_org},
                (from_org, to_org))


# --- moves asked for and approved by both organisations ----------------------------------------

MOVE_REQUEST_DAYS = 14  # a pending request ends after this, so an old yes is not used later


class UnknownMoveRequest(StoreError):
    """No pending move request of that id that this organisation may decide or cancel."""


def _audit_both(conn, now, actor, action, node_id, detail, orgs) -> None:
    audit.insert_for(conn, orgs, now, actor, action, node_id, detail)


def request_move(db, node_id: str, other_org: str, actor=None) -> int:
    """Ask another organisation to take one of this organisation's nodes, or ask the owner of a
    node shared with this organisation for it; the other side decides (decide_move). Audited
    in both; returns the request's id."""
    scope = scope_of(db)
    me = scope.org_id
    other = get_organisation(db, other_org)
    now = time.time()
    with transaction(db) as conn:
        # The node as this organisation sees it: its own, or one shared with it.
        seen = scope.sees_nodes("id", dialect=db.dialect)
        row = conn.execute(f"SELECT org_id FROM nodes WHERE id = ? AND {seen}",
                           (node_id,)).fetchone()
        if row is None:
            raise UnknownNode(f"unknown node {node_id!r}")
        owner = row[0]
        if owner == me:
            from_org, to_org = me, other["id"]
        elif owner == other["id"]:
            from_org, to_org = other["id"], me  # asking for a node shared with us
        else:
            raise StoreError(f"node {node_id!r} is not {other_org!r}'s to give")
        if from_org == to_org:
            raise StoreError(f"node {node_id!r} is already in {other_org!r}")
        if conn.execute("SELECT 1 FROM move_requests WHERE node_id = ? AND state = 'pending'"
                        " AND requested_at > ?", (node_id, now - MOVE_REQUEST_DAYS * 86400)
                        ).fetchone():
            raise StoreError(f"a move of node {node_id!r} is already waiting for a decision")
        rid = conn.execute(
            "INSERT INTO move_requests (node_id, from_org_id, to_org_id, requested_by_org_id,"
            " requested_by, requested_at, state) VALUES (?, ?, ?, ?, ?, ?, 'pending')"
            " RETURNING id", (node_id, from_org, to_org, me, actor, now)).fetchone()[0]
        _audit_both(conn, now, actor, "node.move.request", node_id,
                    {"request": rid, "from": from_org, "to": to_org}, (from_org, to_org))
    return rid


def _pending(conn, request_id: int, org_column: str, me, platform: bool, now: float) -> tuple:
    """(node, from, to, requesting org) of a live pending request this organisation holds in
    org_column; UnknownMoveRequest otherwise (another organisation's requests are unknown)."""
    mine = "" if platform else f" AND {org_column} = {int(me)}"
    row = conn.execute(
        "SELECT node_id, from_org_id, to_org_id, requested_by_org_id, requested_at FROM"
        f" move_requests WHERE id = ? AND state = 'pending'{mine}", (request_id,)).fetchone()
    if row is None or row[4] <= now - MOVE_REQUEST_DAYS * 86400:
        raise UnknownMoveRequest(f"no pending move request {request_id}")
    return row[:4]


def decide_move(db, request_id: int, approve: bool, actor=None) -> dict:
    """Approve (the node moves now, with its history) or reject a request the other side made;
    only the organisation that did not ask decides. Audited in both."""
    scope = scope_of(db)
    now = time.time()
    with transaction(db) as conn:
        # The deciding side: whichever of from/to did not ask (a CASE the database evaluates).
        node_id, from_org, to_org, asker = _pending(
            conn, request_id, "(CASE WHEN requested_by_org_id = from_org_id THEN to_org_id"
            " ELSE from_org_id END)", scope.org_id, scope.platform, now)
        state = "approved" if approve else "rejected"
        if approve:
            owner = conn.execute("SELECT org_id FROM nodes WHERE id = ?", (node_id,)).fetchone()
            if owner is None or owner[0] != from_org:
                raise StoreError(f"node {node_id!r} is no longer where the request found it")
            _move(conn, node_id, from_org, to_org, now, actor)
        conn.execute("UPDATE move_requests SET state = ?, decided_by = ?, decided_at = ?"
                     " WHERE id = ?", (state, actor, now, request_id))
        _audit_both(conn, now, actor, f"node.move.{'approve' if approve else 'reject'}",
                    node_id, {"request": request_id}, (from_org, to_org))
    return {"id": request_id, "node_id": node_id, "state": state}


def cancel_move(db, request_id: int, actor=None) -> None:
    """Withdraw a pending request this organisation made; audited in both."""
    scope = scope_of(db)
    now = time.time()
    with transaction(db) as conn:
        node_id, from_org, to_org, _asker = _pending(
            conn, request_id, "requested_by_org_id", scope.org_id, scope.platform, now)
        conn.execute("UPDATE move_requests SET state = 'cancelled', decided_by = ?,"
                     " decided_at = ? WHERE id = ?", (actor, now, request_id))
        _audit_both(conn, now, actor, "node.move.cancel", node_id, {"request": request_id},
                    (from_org, to_org))


def list_moves(db) -> list[dict]:
    """Move requests this organisation made or must decide (every one for the platform),
    newest first; a pending one past its days reads as expired."""
    scope = scope_of(db)
    o = int(scope.org_id)
    mine = "true" if scope.platform else f"(m.from_org_id = {o} OR m.to_org_id = {o})"
    rows = list(db.query(
        "SELECT m.*, f.name AS from_org, t.name AS to_org, r.name AS requested_by_org"
        " FROM move_requests m JOIN organisations f ON f.id = m.from_org_id"
        " JOIN organisations t ON t.id = m.to_org_id"
        " JOIN organisations r ON r.id = m.requested_by_org_id"
        f" WHERE {mine} ORDER BY m.id DESC"))
    cutoff = time.time() - MOVE_REQUEST_DAYS * 86400
    for r in rows:
        if r["state"] == "pending" and r["requested_at"] <= cutoff:
            r["state"] = "expired"
    return rows
