"""Who a node is: credentials minted at registration (MQTT login, LoRaWAN keys, trusted update
keys, hardware id), and the zero-touch claim tokens and claims that mint them."""

import json
import time

from . import audit
from .base import (
    AlreadyRegistered,
    DuplicateName,
    IntegrityError,
    StoreError,
    UnknownNode,
    first,
    transaction,
)
from .nodes import check_id_free, check_room
from .scope import scope_of

CREDENTIAL_COLUMNS = (
    "node_id, mqtt_user, dev_eui, join_eui, ota_keys, mac, created, created_by, revoked_at, "
    "revoked_by"
)


def register_node(db, node_id: str, cred: dict, name=None, board=None, provider="mqtt",
                  actor=None) -> None:
    """Create (or adopt) a node and store its new credentials in one transaction.

    cred: mqtt_user, mqtt_hash, ota_hash (the OTA file login's),
    dev_eui, join_eui, app_key, ota_keys (dict), mac. Raises
    AlreadyRegistered if the node holds active credentials, DuplicateName if the DevEUI, MAC or
    MQTT user belongs to another node.
    """
    now = time.time()
    try:
        with transaction(db) as conn:
            row = conn.execute("SELECT revoked_at FROM node_credentials WHERE node_id = ?",
                               (node_id,)).fetchone()
            if row is not None and row[0] is None:
                raise AlreadyRegistered(f"node {node_id!r} is already registered; revoke it "
                                        "first or rotate its credentials")
            # Never adopt another organisation's node; a new one counts against the quota.
            if not check_id_free(conn, node_id):
                check_room(conn, scope_of(conn).org_id)
            conn.execute("DELETE FROM node_credentials WHERE node_id = ?", (node_id,))
            conn.execute(
                "INSERT INTO nodes (id, name, board, provider, created, tags, org_id)"
                " VALUES (?, ?, ?, ?, ?, '[]', ?) ON CONFLICT DO NOTHING",
                (node_id, name, board, provider, now, scope_of(conn).org_id))
            conn.execute("UPDATE nodes SET board = coalesce(?, board), name = coalesce(?, name)"
                         " WHERE id = ?", (board, name, node_id))
            conn.execute(
                "INSERT INTO node_credentials (node_id, mqtt_user, mqtt_hash, ota_hash, dev_eui,"
                " join_eui, app_key, ota_keys, mac, created, created_by)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (node_id, cred["mqtt_user"], cred["mqtt_hash"], cred.get("ota_hash"),
                 cred.get("dev_eui"),
                 cred.get("join_eui"), cred.get("app_key"), json.dumps(cred.get("ota_keys") or {}),
                 cred.get("mac"), now, actor))
            audit.insert(conn, now, actor, "node.register", node_id, {"board": board})
    except IntegrityError as e:
        raise DuplicateName(f"cannot register {node_id!r}: {e} (DevEUI, MAC or MQTT user "
                            "already belongs to another node)") from None


def get_credentials(db, node_id: str) -> dict | None:
    """A node's credential record without secrets (no hashes, no AppKey), or None."""
    rows = list(db.query(f"SELECT {CREDENTIAL_COLUMNS} FROM node_credentials WHERE node_id = ?",
                         [node_id]))
    if not rows:
        return None
    row = rows[0]
    row["ota_keys"] = json.loads(row["ota_keys"])
    return row


def node_for_mac(db, mac: str) -> str | None:
    """The node registered with this hardware id (MAC), or None."""
    row = db.conn.execute("SELECT node_id FROM node_credentials WHERE mac = ?", (mac,)).fetchone()
    return row[0] if row else None


def active_mqtt_hashes(db) -> dict[str, str]:
    """{mqtt user: $7$ hash} of every node whose credentials are not revoked."""
    rows = db.conn.execute(
        "SELECT mqtt_user, mqtt_hash FROM node_credentials WHERE revoked_at IS NULL")
    return dict(rows.fetchall())


def node_login_hash(db, mqtt_user: str) -> tuple[str, str] | None:
    """(node id, $7$ hash) of an active node's OTA file login, else None.

    The file login's hash; the MQTT password's only for nodes registered before file logins.
    """
    row = db.conn.execute("SELECT node_id, coalesce(ota_hash, mqtt_hash) FROM node_credentials"
                          " WHERE mqtt_user = ? AND revoked_at IS NULL", (mqtt_user,)).fetchone()
    return (row[0], row[1]) if row else None


def set_ota_keys(db, node_id: str, keys: dict) -> None:
    """The update keys a node's new image carries: they replace what it trusted before."""
    with transaction(db) as conn:
        conn.execute("UPDATE node_credentials SET ota_keys = ? WHERE node_id = ?"
                     " AND revoked_at IS NULL", (json.dumps(keys), node_id))
        conn.execute("UPDATE nodes SET ota_keys = NULL WHERE id = ?", (node_id,))


def trusted_key_ids(db, node_ids=None, owned=False) -> dict[str, list[str] | None]:
    """{node id: ids of the update keys it trusts} (None: not known, e.g. a node enrolled by its
    first frame). What the node last reported wins over what it was provisioned with.
    owned: only nodes the connection's organisation owns (all for the platform's)."""
    sql = ("SELECT n.id, n.ota_keys, c.ota_keys FROM nodes n LEFT JOIN node_credentials c"
           " ON c.node_id = n.id AND c.revoked_at IS NULL"
           f" WHERE {scope_of(db).owns('n.org_id') if owned else 'true'}")
    args = []
    wanted = None
    if node_ids is not None:
        node_ids = list(node_ids)
        if not node_ids:
            return {}  # and `IN ()` is SQLite's only
        if len(node_ids) <= 500:
            sql += f" AND n.id IN ({', '.join('?' * len(node_ids))})"
            args = node_ids
        else:  # a big rollout: one pass over all nodes beats thousands of parameters
            wanted = set(node_ids)
    out = {}
    for node, reported, provisioned in db.conn.execute(sql, args):
        if wanted is not None and node not in wanted:
            continue
        if reported:
            out[node] = sorted(reported.split(","))
        elif provisioned:
            out[node] = sorted(json.loads(provisioned)) or None
        else:
            out[node] = None
    return out


def set_mqtt_hash(db, node_id: str, mqtt_hash: str, actor=None, ota_hash=None) -> None:
    """Replace a node's MQTT password hash and its OTA file login's (rotation); raise UnknownNode
    if it has none."""
    with transaction(db) as conn:
        cur = conn.execute("UPDATE node_credentials SET mqtt_hash = ?, ota_hash = ?"
                           " WHERE node_id = ? AND revoked_at IS NULL",
                           (mqtt_hash, ota_hash, node_id))
        if cur.rowcount != 1:
            raise UnknownNode(f"node {node_id!r} has no active credentials")
        audit.insert(conn, time.time(), actor, "node.rotate", node_id)


def revoke_credentials(db, node_id: str, actor=None) -> None:
    """Mark a node's credentials revoked; raise UnknownNode if it has no active ones."""
    now = time.time()
    with transaction(db) as conn:
        cur = conn.execute("UPDATE node_credentials SET revoked_at = ?, revoked_by = ?"
                           " WHERE node_id = ? AND revoked_at IS NULL", (now, actor, node_id))
        if cur.rowcount != 1:
            raise UnknownNode(f"node {node_id!r} has no active credentials to revoke")
        audit.insert(conn, now, actor, "node.revoke", node_id)


def lorawan_keys(db, node_id: str) -> dict | None:
    """A node's DevEUI, JoinEUI and AppKey (for its image or the network server), or None."""
    row = db.conn.execute("SELECT dev_eui, join_eui, app_key FROM node_credentials WHERE"
                          " node_id = ? AND revoked_at IS NULL", (node_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    return {"dev_eui": row[0], "join_eui": row[1], "app_key": row[2]}


def list_identities(db) -> list[dict]:
    """Every node's credential record (no secrets) with its board, name and online flag,
    newest first."""
    return list(db.query(
        "SELECT c.node_id, c.dev_eui, c.mac, c.created, c.created_by, c.revoked_at, n.board, "
        "n.name, n.online FROM node_credentials c JOIN nodes n ON n.id = c.node_id "
        f"WHERE {scope_of(db).owns('n.org_id')} ORDER BY c.created DESC"))


# --- claim tokens and claims ----------------------------------------------------------------------
# A claim token belongs to the organisation that made it (migration 0034), and so do the claims
# boards made with it and the nodes they are issued: the scope sees only its own of each.


def _claims_owned(db, column: str = "token_id") -> str:
    """The claims made with a claim token the scope's organisation owns."""
    scope = scope_of(db)
    if scope.platform:
        return "true"
    return f"{column} IN (SELECT id FROM claim_tokens WHERE {scope.owns()})"


def add_claim_token(db, token_id, secret_hash, board, max_uses, expires, auto_approve, actor):
    """Store a claim token of the scope's organisation (its secret only as a hash)."""
    now = time.time()
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO claim_tokens (id, secret_hash, board, max_uses, expires, auto_approve,"
            " created, created_by, org_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (token_id, secret_hash, board, max_uses, expires, int(auto_approve), now, actor,
             scope_of(conn).org_id))
        audit.insert(conn, now, actor, "claim_token.create", token_id,
                     {"board": board, "uses": max_uses, "auto": auto_approve})


def get_claim_token(db, token_id) -> dict | None:
    return first(db, f"SELECT * FROM claim_tokens WHERE id = ? AND {scope_of(db).owns()}",
                 [token_id])


def claim_token_usable(token: dict, now: float | None = None) -> bool:
    """True while the token is not revoked, not expired and has uses left."""
    now = time.time() if now is None else now
    return (token["revoked_at"] is None and token["expires"] > now
            and token["uses"] < token["max_uses"])


def list_claim_tokens(db) -> list[dict]:
    """The scope's claim tokens (never their secrets' hashes), newest first."""
    return list(db.query("SELECT id, board, max_uses, uses, expires, auto_approve, created,"
                         " created_by, revoked_at, org_id FROM claim_tokens"
                         f" WHERE {scope_of(db).owns()} ORDER BY created DESC"))


# A claim whose identity the fleet issued but the board has not used yet: the answer may never
# have reached the board (fleet/claims.py hands it a fresh password when it asks again).
_UNDELIVERED = (
    "SELECT 1 FROM claims c JOIN node_credentials k ON k.node_id = c.node_id"
    " JOIN nodes n ON n.id = c.node_id WHERE c.state = 'issued' AND k.revoked_at IS NULL"
    " AND n.last_seen IS NULL")
# The tokens the claim listener admits: usable ones, and used-up ones while a board they issued
# an identity to has not been heard with it yet (it may still have to fetch the answer), or while
# a claim made with them waits for an operator or for its board to fetch what was approved (the
# real board in a conflict, whose token's use a squatter may have spent).
_ADMITTED = (f"revoked_at IS NULL AND expires > ? AND (uses < max_uses OR EXISTS ("
             f"{_UNDELIVERED} AND c.token_id = claim_tokens.id) OR EXISTS (SELECT 1 FROM claims w"
             f" WHERE w.token_id = claim_tokens.id AND w.state IN ('pending', 'approved')))")


def active_claim_token_hashes(db) -> dict[str, str]:
    """{token id: secret hash} of every token the broker's claim listener may admit now."""
    rows = db.conn.execute(f"SELECT id, secret_hash FROM claim_tokens WHERE {_ADMITTED}",
                           (time.time(),))
    return dict(rows.fetchall())


def next_claim_token_expiry(db, now: float | None = None) -> float | None:
    """When the next token the claim listener admits now runs out of time (None: no such token)."""
    row = db.conn.execute(f"SELECT min(expires) FROM claim_tokens WHERE {_ADMITTED}",
                          (time.time() if now is None else now,)).fetchone()
    return row[0]


def claim_undelivered(db, claim_id) -> bool:
    """True while the identity issued for this claim has not been used by its board."""
    return db.conn.execute(f"{_UNDELIVERED} AND c.id = ?", (claim_id,)).fetchone() is not None


def use_claim_token(db, token_id) -> bool:
    """Take one use of a token (atomically); False if it has none left or expired."""
    with transaction(db) as conn:
        cur = conn.execute("UPDATE claim_tokens SET uses = uses + 1 WHERE id = ? AND uses <"
                           " max_uses AND expires > ? AND revoked_at IS NULL",
                           (token_id, time.time()))
        return cur.rowcount == 1


class UnknownClaimToken(StoreError):
    """No claim token with that id that is not revoked yet (in the connection's organisation)."""


def revoke_claim_token(db, token_id, actor=None) -> None:
    """End a claim token of the scope's organisation: no board claims with it any more."""
    with transaction(db) as conn:
        cur = conn.execute("UPDATE claim_tokens SET revoked_at = ? WHERE id = ? AND"
                           f" revoked_at IS NULL AND {scope_of(conn).owns()}",
                           (time.time(), token_id))
        if cur.rowcount != 1:
            raise UnknownClaimToken(f"no active claim token {token_id!r}")
        audit.insert(conn, time.time(), actor, "claim_token.revoke", token_id)


def get_claim(db, mac, client_id=None) -> dict | None:
    """The claim this board (MAC and claim id) made, or without client_id the newest for the MAC."""
    owned = _claims_owned(db)
    if client_id is not None:
        return first(db, f"SELECT * FROM claims WHERE mac = ? AND client_id = ? AND {owned}",
                     [mac, client_id])
    return first(db, f"SELECT * FROM claims WHERE mac = ? AND {owned} ORDER BY id DESC LIMIT 1",
                 [mac])


def get_claim_by_id(db, claim_id) -> dict | None:
    return first(db, f"SELECT * FROM claims WHERE id = ? AND {_claims_owned(db)}", [claim_id])


def rival_claims(db, mac, but=None) -> list[dict]:
    """The claims for this MAC that are not rejected (pending, approved or issued), oldest first,
    except the claim `but`."""
    return list(db.query("SELECT * FROM claims WHERE mac = ? AND state != 'rejected'"
                         f" AND (CAST(? AS INTEGER) IS NULL OR id != ?) AND {_claims_owned(db)}"
                         " ORDER BY id", [mac, but, but]))


def add_claim(db, token_id, client_id, mac, board, conflict=False) -> dict:
    """Record a new pending claim and return it; a conflict (another board asked for this MAC
    first) is audited, for the operator to decide."""
    now = time.time()
    with transaction(db) as conn:
        cur = conn.execute("INSERT INTO claims (token_id, client_id, mac, board, requested_at,"
                           " conflict) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                           (token_id, client_id, mac, board, now, int(conflict)))
        claim_id = cur.fetchone()[0]
        if conflict:
            audit.insert(conn, now, f"claim:{token_id}", "claim.conflict", str(claim_id),
                         {"mac": mac, "client_id": client_id})
    return get_claim(db, mac, client_id)


CLAIM_STATES = ("pending", "approved", "rejected", "issued")
# The other claims not rejected for the same MAC, as "id,id": what the operator compares.
_RIVALS = {
    dialect: (f"(SELECT {concat} FROM claims o WHERE o.mac = claims.mac AND o.id !="
              " claims.id AND o.state != 'rejected') AS rivals")
    for dialect, concat in (("sqlite", "group_concat(o.id)"),
                            ("postgresql", "string_agg(CAST(o.id AS TEXT), ',' ORDER BY o.id)"))
}


def list_claims(db, limit=200, state=None) -> list[dict]:
    """The scope's claims, newest first (only those in `state` if given), each with `rivals`:
    the ids of the other claims for its MAC that are not rejected (a conflict when not empty;
    also another organisation's, which only the platform operator may then decide)."""
    where, args = ("", [limit]) if state is None else ("AND state = ?", [state, limit])
    rows = list(db.query(
        f"SELECT *, {_RIVALS[db.dialect]} FROM claims WHERE {_claims_owned(db)} {where}"
        " ORDER BY id DESC LIMIT ?", args))
    for row in rows:
        row["rivals"] = [int(i) for i in row["rivals"].split(",")] if row["rivals"] else []
    return rows


def decide_claim(db, claim_id, state, actor, reason=None) -> list[str]:
    """Approve or reject a pending claim; StoreError if it is not pending.

    Approving one claim for a MAC rejects every other claim for it, and revokes the identity one
    of them was issued (a squatter's): returns the node ids revoked, for the broker to drop.
    """
    now = time.time()
    revoked = []
    with transaction(db) as conn:
        if state == "approved" and not scope_of(conn).platform and conn.execute(
                "SELECT 1 FROM claims o JOIN claims c ON c.mac = o.mac WHERE c.id = ?"
                " AND o.id != c.id AND o.state != 'rejected'"
                f" AND NOT ({_claims_owned(conn, 'o.token_id')})", (claim_id,)).fetchone():
            # Approving would reject another organisation's claim and revoke its node.
            raise StoreError(f"claim {claim_id} conflicts with a claim made with another"
                             " organisation's token: the platform operator decides it")
        cur = conn.execute("UPDATE claims SET state = ?, decided_at = ?, decided_by = ?,"
                           f" reason = ? WHERE id = ? AND state = 'pending' AND"
                           f" {_claims_owned(conn)}", (state, now, actor, reason, claim_id))
        if cur.rowcount != 1:
            raise StoreError(f"claim {claim_id} is not waiting for a decision")
        audit.insert(conn, now, actor, f"claim.{state}", str(claim_id),
                     {"reason": reason} if reason else None)
        if state != "approved":
            return revoked
        others = conn.execute(
            "SELECT o.id, o.state, o.node_id FROM claims o JOIN claims c ON c.mac = o.mac"
            " WHERE c.id = ? AND o.id != c.id AND o.state != 'rejected'", (claim_id,)).fetchall()
        why = f"claim {claim_id} for this hardware id was approved instead"
        for other, other_state, node in others:
            conn.execute("UPDATE claims SET state = 'rejected', decided_at = ?, decided_by = ?,"
                         " reason = ? WHERE id = ?", (now, actor, why, other))
            audit.insert(conn, now, actor, "claim.rejected", str(other),
                         {"reason": why, "was": other_state})
            if other_state == "issued" and node is not None:
                cur = conn.execute("UPDATE node_credentials SET revoked_at = ?, revoked_by = ?"
                                   " WHERE node_id = ? AND revoked_at IS NULL", (now, actor, node))
                if cur.rowcount:
                    audit.insert(conn, now, actor, "node.revoke", node,
                                 {"reason": why})
                    revoked.append(node)
    return revoked


def mark_claim_issued(db, claim_id, node_id) -> None:
    with transaction(db) as conn:
        conn.execute("UPDATE claims SET state = 'issued', node_id = ? WHERE id = ?",
                     (node_id, claim_id))
