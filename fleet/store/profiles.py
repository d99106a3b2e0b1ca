"""Device profiles, which profile each node has, and the last raw payloads of non-Polylink
devices (kept so a changed codec can be tried on them first)."""

import json
import time

from . import audit
from .base import GREATEST, DuplicateName, StoreError, UnknownNode, first, transaction
from .nodes import check_id_free, check_room, owned_node
from .scope import PLATFORM_ORG, scope_of

RAW_KEPT = 100  # raw payloads kept per node; older ones are deleted as new ones arrive


class UnknownProfile(StoreError):
    """No device profile with that name exists."""


class ProfileInUse(StoreError):
    """The profile still has nodes; move them to another profile first."""


def _profile(row: dict) -> dict:
    row = dict(row)
    row["fields"] = json.loads(row["fields"] or "[]")
    row["commands"] = json.loads(row["commands"] or "[]")
    return row


def _profiles_seen(db, column: str = "org_id") -> str:
    """An organisation sees its own profiles and the platform operator's (the catalogue every
    organisation's devices may use, 'polylink' first); it changes only its own."""
    return f"({scope_of(db).owns(column)} OR {column} = {PLATFORM_ORG})"


def list_profiles(db) -> list[dict]:
    """Every profile with the number of nodes that have it, by name."""
    rows = db.query(
        "SELECT p.*, (SELECT count(*) FROM nodes n WHERE n.profile = p.name) AS nodes"
        f" FROM device_profiles p WHERE {_profiles_seen(db, 'p.org_id')} ORDER BY p.name")
    return [_profile(r) for r in rows]


def get_profile(db, name: str) -> dict:
    row = first(db, "SELECT * FROM device_profiles WHERE name = ?"
                f" AND {_profiles_seen(db)}", [name])
    if row is None:
        raise UnknownProfile(f"no device profile named {name!r}")
    return _profile(row)


def save_profile(db, p: dict, actor=None) -> dict:
    """Create or replace a profile (its version goes up by one on every change); audited."""
    now = time.time()
    with transaction(db) as conn:
        if conn.execute("SELECT 1 FROM device_profiles WHERE name = ?"
                        f" AND NOT ({scope_of(db).owns()})", (p["name"],)).fetchone():
            raise DuplicateName(f"profile name {p['name']!r} is taken: choose another")
        old = conn.execute("SELECT version, source, created FROM device_profiles WHERE name = ?",
                           (p["name"],)).fetchone()
        version = 1 if old is None else old[0] + 1
        created = now if old is None else old[2]
        # An upsert both SQLite and PostgreSQL speak (not SQLite's INSERT OR REPLACE).
        conn.execute(
            "INSERT INTO device_profiles (name, codec, source, fields, interval,"
            " commands, description, version, created, updated, org_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " codec = excluded.codec, source = excluded.source, fields = excluded.fields,"
            " interval = excluded.interval, commands = excluded.commands,"
            " description = excluded.description, version = excluded.version,"
            " updated = excluded.updated",
            (p["name"], p["codec"], p.get("source"), json.dumps(p.get("fields") or []),
             p.get("interval"), json.dumps(p.get("commands") or []), p.get("description"),
             version, created, now, scope_of(db).org_id))
        if p.get("interval"):
            # The offline alert reads nodes.interval; a STATUS never comes from these devices.
            conn.execute("UPDATE nodes SET interval = ? WHERE profile = ?",
                         (p["interval"], p["name"]))
        audit.insert(conn, now, actor, "profile.create" if old is None else "profile.update",
                     p["name"], {"codec": p["codec"], "version": version,
                                 "codec_changed": old is not None and old[1] != p.get("source")})
    return get_profile(db, p["name"])


def delete_profile(db, name: str, actor=None) -> None:
    with transaction(db) as conn:
        n = conn.execute("SELECT count(*) FROM nodes WHERE profile = ?", (name,)).fetchone()[0]
        if n:
            raise ProfileInUse(f"profile {name!r} has {n} node(s); move them first")
        if conn.execute(f"DELETE FROM device_profiles WHERE name = ? AND {scope_of(db).owns()}",
                        (name,)).rowcount == 0:
            raise UnknownProfile(f"no device profile named {name!r}")
        audit.insert(conn, time.time(), actor, "profile.delete", name)


def assign(db, node_id: str, profile: str, actor=None) -> None:
    """Give a node a profile (and the profile's reporting interval for the offline alert)."""
    now = time.time()
    with transaction(db) as conn:
        row = conn.execute("SELECT interval FROM device_profiles WHERE name = ?"
                           f" AND {_profiles_seen(db)}", (profile,)).fetchone()
        if row is None:
            raise UnknownProfile(f"no device profile named {profile!r}")
        old = conn.execute("SELECT profile FROM nodes WHERE id = ?"
                           f" AND {scope_of(db).owns()}", (node_id,)).fetchone()
        if old is None:
            raise UnknownNode(f"unknown node {node_id!r}")
        conn.execute("UPDATE nodes SET profile = ?, interval = coalesce(?, interval) WHERE id = ?",
                     (profile, row[0], node_id))
        audit.insert(conn, now, actor, "node.profile", node_id, {"from": old[0], "to": profile})


def node_profiles(db) -> dict[str, str]:
    """node id -> profile name, for the nodes not on 'polylink' (the ingest's lookup)."""
    return dict(db.conn.execute("SELECT id, profile FROM nodes WHERE profile != 'polylink'"))


def profile_of(db, node_id: str) -> str:
    """The profile of a node the connection's organisation owns, to command it: UnknownNode
    for another organisation's, SharedReadOnly for one only shared with it."""
    return owned_node(db, node_id)["profile"]


def last_seen_times(db) -> dict[str, float]:
    """node id -> last_seen of the non-Polylink nodes (FCnt reset detection)."""
    return {n: t for n, t in db.conn.execute(
        "SELECT id, last_seen FROM nodes WHERE profile != 'polylink' AND last_seen IS NOT NULL")}


def store_raw(db, rows: list[tuple], prune=None) -> None:
    """Append (node, received_at, provider, fport, fcnt, payload) rows; trim the nodes in prune
    (default: every node of rows) to their last RAW_KEPT."""
    if not rows:
        return
    with transaction(db) as conn:
        conn.executemany(
            "INSERT INTO raw_payloads (node_id, received_at, provider, fport, fcnt, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)", rows)
        for node in ({r[0] for r in rows} if prune is None else prune):
            conn.execute(
                "DELETE FROM raw_payloads WHERE node_id = ? AND id < (SELECT id FROM"
                " raw_payloads WHERE node_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (node, node, RAW_KEPT - 1))


def raw_payloads(db, node_id: str, limit=RAW_KEPT) -> list[dict]:
    """A node's last raw payloads, newest first."""
    return list(db.query(
        "SELECT id, received_at, provider, fport, fcnt, payload FROM raw_payloads"
        " WHERE node_id = ? ORDER BY id DESC LIMIT ?", [node_id, limit]))


ANY_PROVIDER = "*"  # transport_ids.provider of a DevEUI registered on whichever network hears it


def register_device(db, node_id: str, dev_eui: str, profile: str, name=None, lat=None,
                    lon=None, actor=None) -> None:
    """Register another supplier's LoRaWAN device by its DevEUI, on every provider; audited.

    It gets no MQTT or OTA credentials (it is monitored, not updated). DuplicateName if the
    node id or the DevEUI is taken.
    """
    now = time.time()
    with transaction(db) as conn:
        interval = conn.execute("SELECT interval FROM device_profiles WHERE name = ?"
                                f" AND {_profiles_seen(db)}", (profile,)).fetchone()
        if interval is None:
            raise UnknownProfile(f"no device profile named {profile!r}")
        if check_id_free(conn, node_id):
            raise DuplicateName(f"node {node_id!r} exists already")
        check_room(conn, scope_of(conn).org_id)
        taken = conn.execute(
            "SELECT node_id FROM node_credentials WHERE upper(dev_eui) = ? AND revoked_at IS NULL"
            " UNION SELECT node_id FROM transport_ids WHERE ext_id = ?",
            (dev_eui, dev_eui)).fetchone()
        if taken:
            raise DuplicateName(f"DevEUI {dev_eui} belongs to node {taken[0]!r}")
        conn.execute(
            "INSERT INTO nodes (id, name, provider, profile, interval, lat, lon, created, tags,"
            " org_id) VALUES (?, ?, 'lorawan', ?, ?, ?, ?, ?, '[]', ?)",
            (node_id, name, profile, interval[0], lat, lon, now, scope_of(conn).org_id))
        conn.execute("INSERT INTO transport_ids (provider, ext_id, node_id) VALUES (?, ?, ?)",
                     (ANY_PROVIDER, dev_eui, node_id))
        audit.insert(conn, now, actor, "device.register", node_id,
                     {"dev_eui": dev_eui, "profile": profile})


def store_senml(db, rows: list[tuple], received_at: float) -> int:
    """Store SenML readings (node, name, t, qid, inst, value) exactly once per (node, name, t);
    mark their nodes seen. Returns how many were new."""
    fresh = []
    with transaction(db) as conn:
        for node, name, t, qid, inst, value in rows:
            if conn.execute("INSERT INTO senml_seen (node_id, name, t) VALUES (?, ?, ?)"
                            " ON CONFLICT DO NOTHING",
                            (node, name, t)).rowcount == 1:
                fresh.append((node, t, qid, inst, value))
        conn.executemany("INSERT INTO readings (node_id, t, qid, inst, value)"
                         " VALUES (?, ?, ?, ?, ?)", fresh)
        conn.executemany(
            "INSERT INTO latest (node_id, qid, inst, t, value) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (node_id, qid, inst) DO UPDATE SET t = excluded.t,"
            " value = excluded.value WHERE excluded.t >= latest.t",
            [(n, q, i, t, v) for n, t, q, i, v in fresh])
        conn.executemany(
            f"UPDATE nodes SET last_seen = {GREATEST[conn.dialect]}(coalesce(last_seen, 0), ?),"
            " online = 1 WHERE id = ?",
            [(received_at, n) for n in {r[0] for r in rows}])
    return len(fresh)


def supplier_of_token(db, token_hash: str) -> str | None:
    row = db.conn.execute("SELECT name FROM suppliers WHERE token_hash = ?",
                          (token_hash,)).fetchone()
    return None if row is None else row[0]


def supplier_rotated_from(db, token_hash: str) -> tuple[str, float] | None:
    """(supplier, when) if this is the token a supplier's last rotation replaced, else None."""
    row = db.conn.execute("SELECT name, rotated FROM suppliers WHERE old_token_hash = ?",
                          (token_hash,)).fetchone()
    return None if row is None else (row[0], row[1])


def add_supplier(db, name: str, token_hash: str, mqtt_hash: str, actor=None) -> None:
    """A supplier of the scope's organisation; DuplicateName if the name is taken anywhere (it
    is a broker login, supplier.NAME)."""
    now = time.time()
    with transaction(db) as conn:
        if conn.execute("SELECT 1 FROM suppliers WHERE name = ?", (name,)).fetchone():
            raise DuplicateName(f"supplier name {name!r} is taken: choose another")
        conn.execute("INSERT INTO suppliers (name, token_hash, mqtt_hash, created, org_id)"
                     " VALUES (?, ?, ?, ?, ?)",
                     (name, token_hash, mqtt_hash, now, scope_of(conn).org_id))
        audit.insert(conn, now, actor, "supplier.add", name)


def set_supplier(db, node_id: str, supplier: str | None, actor=None) -> None:
    """Let a supplier of the scope's organisation write a node that organisation owns (None: no
    supplier). A supplier writes only to nodes of its own organisation, also for the platform."""
    owned_node(db, node_id)  # UnknownNode, or SharedReadOnly for a node only shared with it
    with transaction(db) as conn:
        node = conn.execute(f"SELECT org_id FROM nodes WHERE id = ? AND {scope_of(conn).owns()}",
                            (node_id,)).fetchone()
        if node is None:
            raise UnknownNode(f"unknown node {node_id!r}")
        if supplier is not None:
            row = conn.execute("SELECT org_id FROM suppliers WHERE name = ?"
                               f" AND {scope_of(conn).owns()}", (supplier,)).fetchone()
            if row is None:
                raise StoreError(f"no supplier named {supplier!r}")
            if row[0] != node[0]:
                raise StoreError(f"supplier {supplier!r} belongs to another organisation than"
                                 f" node {node_id!r}: a supplier writes only to its own"
                                 " organisation's nodes")
        conn.execute("UPDATE nodes SET supplier = ? WHERE id = ?", (supplier, node_id))
        audit.insert(conn, time.time(), actor, "node.supplier", node_id, {"supplier": supplier},
                     owner=node[0])


# A supplier's nodes: those given to it that its organisation still owns (a node moved to
# another organisation leaves its supplier behind).
_SUPPLIED = ("SELECT n.id, n.profile, s.name FROM nodes n JOIN suppliers s"
             " ON s.name = n.supplier AND s.org_id = n.org_id")


def supplier_nodes(db, supplier: str) -> dict[str, str]:
    """node id -> profile of a supplier's nodes."""
    return {n: p for n, p, _s in db.conn.execute(f"{_SUPPLIED} WHERE s.name = ?", (supplier,))}


def senml_fields(db) -> dict[str, list]:
    """node id -> the field mapping of its senml profile (nodes with one)."""
    return {n: json.loads(f) for n, f in db.conn.execute(
        "SELECT n.id, p.fields FROM nodes n JOIN device_profiles p ON p.name = n.profile"
        " WHERE p.codec = 'senml'")}


def supplier_logins(db) -> dict[str, tuple[str, list[str]]]:
    """supplier name -> (mosquitto password hash, ids of its nodes), for the broker's files."""
    out = {name: (h, []) for name, h in db.conn.execute(
        "SELECT name, mqtt_hash FROM suppliers ORDER BY name")}
    for node, _p, supplier in db.conn.execute(f"{_SUPPLIED} ORDER BY n.id"):
        out[supplier][1].append(node)
    return out
