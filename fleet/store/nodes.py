"""Nodes: the registry, the node list's filters and sorts, the overview, positions and tags."""

import json
import time

from . import audit
from .base import (
    POSTGRESQL,
    TRUNCATE,
    BadFilter,
    DuplicateName,
    StoreError,
    UnknownNode,
    transaction,
)
from .scope import forget_readable, note_readable, one_node, scope_of


class NodeQuotaReached(StoreError):
    """The organisation already holds as many nodes as its quota allows."""


def _seen(db) -> str:
    """The SQL that keeps the nodes the connection's scope may read (own and shared)."""
    return scope_of(db).sees_nodes(dialect=db.dialect)


def _seen_row(db, node_id: str) -> str:
    """_seen for a query that reads node node_id: tests the row found, builds no set of nodes
    (and none at all where this request already found the node readable: scope.one_node)."""
    return one_node(db, node_id, scope_of(db).sees_node_row("nodes", db.dialect))


def _owned(db) -> str:
    """The SQL that keeps the nodes the connection's organisation owns (may change)."""
    return scope_of(db).owns("nodes.org_id")

NODE_COLUMNS = (
    "id, name, board, provider, firmware_version, micropython_version, last_seen, online, uptime,"
    " reset_cause, heap_free, rssi, queue, dropped, lost, boots, interval, status_at, battery,"
    " bad_frames, created, tags, profile"
)


def _node_dict(row: dict) -> dict:
    row["online"] = bool(row["online"])
    row["tags"] = json.loads(row["tags"] or "[]")
    return row


def list_nodes(db) -> list[dict]:
    """Every registered node, ordered by id."""
    rows = db.query(f"SELECT {NODE_COLUMNS} FROM nodes WHERE {_seen(db)} ORDER BY id")
    return [_node_dict(r) for r in rows]


def get_node(db, node_id: str) -> dict:
    """One node; raise UnknownNode if it is not registered or not visible to the scope.

    "shared" is true for a node another organisation shared with the scope's (read only).
    """
    scope = scope_of(db)
    rows = list(db.query(
        f"SELECT {NODE_COLUMNS}, NOT ({scope.owns('nodes.org_id')}) AS shared FROM nodes"
        f" WHERE id = ? AND {_seen_row(db, node_id)}", [node_id]))
    if not rows:
        raise UnknownNode(f"unknown node {node_id!r}")
    note_readable(db, node_id)
    rows[0]["shared"] = bool(rows[0]["shared"])
    return _node_dict(rows[0])


def owned_node(db, node_id: str) -> dict:
    """One node the scope's organisation owns (may command or change); UnknownNode if it is
    not registered or not visible; SharedReadOnly if it is only shared with the scope."""
    node = get_node(db, node_id)
    if node["shared"]:
        raise SharedReadOnly(f"node {node_id!r} is shared with your organisation read-only")
    return node


class SharedReadOnly(StoreError):
    """The node was shared with the organisation for reading; it cannot be changed there."""


def check_room(conn, org_id: int) -> None:
    """NodeQuotaReached unless the organisation may hold one more node (inside the caller's
    transaction, before it adds the node)."""
    used, quota = conn.execute(
        "SELECT (SELECT count(*) FROM nodes WHERE org_id = ?), max_nodes FROM organisations"
        " WHERE id = ?", (org_id, org_id)).fetchone()
    if quota is not None and used >= quota:
        raise NodeQuotaReached(
            f"the organisation holds {used} nodes, its quota is {quota}: ask the platform"
            " operator to raise it, or remove a node first")


def check_id_free(conn, node_id: str) -> bool:
    """True if a node with that id exists in the connection's organisation, False if none does;
    DuplicateName if another organisation's node has it (ids are global: they are MQTT topics)."""
    row = conn.execute("SELECT org_id FROM nodes WHERE id = ?", (node_id,)).fetchone()
    scope = scope_of(conn)
    if row is not None and not scope.platform and row[0] != scope.org_id:
        raise DuplicateName(f"node id {node_id!r} is taken: choose another")
    return row is not None


def enrol_node(db, node_id: str, name=None, board=None, provider=None, tags=()):
    """Register a node (idempotent) in the scope's organisation; used by provisioning and by
    first contact. NodeQuotaReached if the organisation is at its node quota."""
    org_id = scope_of(db).org_id
    with transaction(db) as conn:
        if conn.execute("SELECT 1 FROM nodes WHERE id = ?", (node_id,)).fetchone():
            return
        check_room(conn, org_id)
        conn.execute(
            "INSERT INTO nodes (id, name, board, provider, created, tags, org_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (node_id, name, board, provider, time.time(), json.dumps(list(tags)), org_id),
        )


def rename_node(db, node_id: str, name: str):
    """Set a node's display name."""
    owned_node(db, node_id)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET name = ? WHERE id = ?", (name, node_id))


def count_nodes(db) -> int:
    """How many nodes are registered."""
    return db.conn.execute(f"SELECT count(*) FROM nodes WHERE {_seen(db)}").fetchone()[0]


def up_seqs(db) -> dict[str, int]:
    """Last extended uplink seq of every node, to resume seq extension after a restart."""
    return dict(db.conn.execute(
        f"SELECT id, up_seq FROM nodes WHERE up_seq IS NOT NULL AND {_seen(db)}"))


def boot_times(db) -> dict[str, float]:
    """When every node last booted, as its newest STATUS told (its time minus its uptime)."""
    return dict(db.conn.execute(
        "SELECT id, status_at - uptime FROM nodes"
        f" WHERE status_at IS NOT NULL AND uptime IS NOT NULL AND {_seen(db)}"))


def known_node_ids(db) -> set[str]:
    """Ids of every registered node."""
    return {r[0] for r in db.conn.execute(f"SELECT id FROM nodes WHERE {_seen(db)}")}


# A node counts as online while its broker session is up (conn 1) and it was heard within three
# reporting intervals plus a minute; LoRaWAN nodes have no session flag, so the time rule matters.
OFFLINE_INTERVALS = 3
OFFLINE_GRACE = 60
DEFAULT_INTERVAL = 60
ALLOWANCE_SQL = f"({OFFLINE_INTERVALS} * coalesce(interval, {DEFAULT_INTERVAL}) + {OFFLINE_GRACE})"
STATUS_SQL = (
    "CASE WHEN last_seen IS NULL THEN 'new'"
    f" WHEN online = 1 AND last_seen >= :now - {ALLOWANCE_SQL} THEN 'online' ELSE 'offline' END"
)
BATTERY_LOW = 3.4  # V: below it a node counts as low and an alert opens
ALERTING_SQL = "id IN (SELECT node_id FROM alerts WHERE state != 'resolved')"


# Sort keys of the node list -> SQL; every one is backed by an index or is cheap on 10,000 rows.
NODE_SORTS = {
    "id": "id",
    "name": "coalesce(name, id)",
    "last_seen": "last_seen",
    "battery": "battery",
    "firmware": "firmware_version",
    "micropython": "micropython_version",
    "provider": "provider",
    "rssi": "rssi",
}
SEEN_WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
# Node list filters that match one column exactly (menus of the values present), each indexed.
FACETS = (("provider", "provider"), ("board", "board"), ("firmware", "firmware_version"),
          ("micropython", "micropython_version"))


# "The node's tags (a JSON array in TEXT) hold {}", with {} a placeholder, by dialect.
HAS_TAG = {
    "sqlite": "EXISTS (SELECT 1 FROM json_each(nodes.tags) WHERE value = {})",
    "postgresql": "nodes.tags::jsonb @> jsonb_build_array(CAST({} AS text))",
}
# Bulk tagging: drop a tag from / append a tag to the array, only where that changes it.
_UNTAG = {
    "sqlite": "UPDATE nodes SET tags = (SELECT json_group_array(value) FROM json_each(nodes.tags)"
              " WHERE value != :tag) WHERE id = :id AND " + HAS_TAG["sqlite"].format(":tag"),
    "postgresql": "UPDATE nodes SET tags = (nodes.tags::jsonb - CAST(:tag AS text))::text"
                  " WHERE id = :id AND " + HAS_TAG["postgresql"].format(":tag"),
}
_TAG = {
    "sqlite": "UPDATE nodes SET tags = json_insert(tags, '$[#]', :tag) WHERE id = :id"
              " AND NOT " + HAS_TAG["sqlite"].format(":tag"),
    "postgresql": "UPDATE nodes SET tags = (nodes.tags::jsonb || jsonb_build_array(CAST(:tag AS"
                  " text)))::text WHERE id = :id AND NOT " + HAS_TAG["postgresql"].format(":tag"),
}


# A sort key {0} in direction {1} with NULLs last. PostgreSQL's own spelling lets an index on
# (key, id) return a deep page in order (migration 0035: page 100 read 5,000 index entries instead
# of sorting every node); SQLite has NULLS LAST only from 3.30 and sorts the node list anyway.
ORDER_NULLS_LAST = {"sqlite": "{0} IS NULL, {0} {1}", "postgresql": "{0} {1} NULLS LAST"}
# A substring search that ignores case, {0} the column and {1} the pattern: SQLite's LIKE ignores
# ASCII case; on PostgreSQL lower() LIKE lower() is ILIKE in the form of the trigram index on
# lower(column) (migration 0037 says why not on the column).
CASELESS_LIKE = {"sqlite": "{0} LIKE {1}", "postgresql": "lower({0}) LIKE lower({1})"}
# The smaller of two values: SQLite's scalar min(), PostgreSQL's least().
LEAST = {"sqlite": "min", "postgresql": "least"}


def _node_where(db, f: dict, now: float, dialect: str) -> tuple[str, dict]:
    """WHERE clause and parameters for the node list's filters (all optional, ANDed)."""
    where, args = [scope_of(db).sees_nodes(dialect=dialect)], {"now": now}
    q = (f.get("q") or "").strip()
    if q:
        args["q"] = q
        like = CASELESS_LIKE[dialect]
        args["like"] = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(
            "(" + " OR ".join(like.format(column, ":like") + " ESCAPE '\\'"
                              for column in ("id", "name", "location"))
            + f" OR {HAS_TAG[dialect].format(':q')})"
        )
    status = f.get("status")
    if status == "alerting":
        where.append(ALERTING_SQL)
    elif status in ("online", "offline", "new"):
        where.append(f"{STATUS_SQL} = :status")
        args["status"] = status
    elif status:
        raise BadFilter(f"status {status!r}: expected online, offline, new or alerting")
    for key, column in FACETS:
        if f.get(key):
            where.append(f"{column} = :{key}")
            args[key] = f[key]
    if f.get("tag"):
        where.append(HAS_TAG[dialect].format(":tag"))
        args["tag"] = f["tag"]
    battery = f.get("battery")
    if battery == "low":
        where.append(f"battery < {BATTERY_LOW}")
    elif battery == "ok":
        where.append(f"battery >= {BATTERY_LOW}")
    elif battery == "unknown":
        where.append("battery IS NULL")
    elif battery:
        raise BadFilter(f"battery {battery!r}: expected low, ok or unknown")
    seen = f.get("seen")
    if seen in SEEN_WINDOWS:
        where.append("last_seen >= :seen_since")
        args["seen_since"] = now - SEEN_WINDOWS[seen]
    elif seen == "older":
        where.append("last_seen < :seen_since")
        args["seen_since"] = now - SEEN_WINDOWS["7d"]
    elif seen == "never":
        where.append("last_seen IS NULL")
    elif seen:
        raise BadFilter(f"seen {seen!r}: expected 1h, 24h, 7d, older or never")
    return " AND ".join(where), args


def query_nodes(db, filters: dict, sort="id", desc=False, offset=0, limit=50,
                now=None) -> tuple[list[dict], int]:
    """One page of nodes matching the filters, in order, and how many match in all."""
    if sort not in NODE_SORTS:
        raise BadFilter(f"sort {sort!r}: expected one of {', '.join(NODE_SORTS)}")
    now = time.time() if now is None else now
    where, args = _node_where(db, filters, now, db.dialect)
    total = db.conn.execute(f"SELECT count(*) FROM nodes WHERE {where}", args).fetchone()[0]
    # NULLs (never seen, no battery) go last either way; id breaks ties so pages are stable.
    order = ORDER_NULLS_LAST[db.dialect].format(NODE_SORTS[sort], "DESC" if desc else "ASC")
    rows = list(db.query(
        f"SELECT {NODE_COLUMNS}, location, lat, lon, {STATUS_SQL} AS status,"
        f" NOT ({scope_of(db).owns('nodes.org_id')}) AS shared FROM nodes"
        f" WHERE {where} ORDER BY {order}, id"
        " LIMIT :limit OFFSET :offset",
        dict(args, limit=limit, offset=offset),
    ))
    if rows:
        ids = [r["id"] for r in rows]
        counts = dict(db.conn.execute(
            "SELECT node_id, count(*) FROM alerts WHERE state != 'resolved' AND node_id IN"
            f" ({', '.join('?' * len(ids))}) GROUP BY node_id", ids))
        for r in rows:
            _node_dict(r)
            r["alerts"] = counts.get(r["id"], 0)
            r["shared"] = bool(r["shared"])
    return rows, total


def matching_node_ids(db, filters: dict, now=None) -> list[str]:
    """Ids of every node matching the filters (for bulk actions on a whole result)."""
    where, args = _node_where(db, filters, time.time() if now is None else now, db.dialect)
    return [r[0] for r in db.conn.execute(f"SELECT id FROM nodes WHERE {where}", args)]


def facets(db) -> dict[str, list[str]]:
    """The providers, boards, firmware and MicroPython versions present, for the filter menus."""
    out = {}
    if not scope_of(db).platform or db.dialect == POSTGRESQL:
        # One pass over the scope's nodes: four queries each built the visible set again
        # (0.3 ms a node list page for an organisation's member, tests/bench/bench_orgs.py).
        # PostgreSQL also for the platform: it scans the table for each DISTINCT where SQLite
        # reads four small indexes.
        rows = db.conn.execute(
            f"SELECT DISTINCT {', '.join(column for _key, column in FACETS)} FROM nodes"
            f" WHERE {_seen(db)}").fetchall()
        for k, (key, _column) in enumerate(FACETS):
            out[key] = sorted({r[k] for r in rows if r[k] is not None})
        return out
    for key, column in FACETS:
        out[key] = [r[0] for r in db.conn.execute(
            f"SELECT DISTINCT {column} FROM nodes WHERE {column} IS NOT NULL AND {_seen(db)}"
            " ORDER BY 1")]
    return out


def overview(db, now=None) -> dict:
    """Node counts (total/online/offline/new/alerting) in all and by provider, board, firmware
    and MicroPython version."""
    now = time.time() if now is None else now
    # Two grouped scans (statuses over the covering index nodes_overview on SQLite, over the node
    # rows on PostgreSQL, whose migration 0039 dropped that index so contacts are HOT updates;
    # alerting nodes from the unresolved alerts) cost about half of one scan that probes the
    # alerts for every node.
    seen_n = scope_of(db).sees_nodes("n.id", "n.org_id", "n.tags", db.dialect)
    rows = db.conn.execute(
        f"SELECT provider, board, firmware_version, micropython_version, {STATUS_SQL}, count(*)"
        f" FROM nodes WHERE {_seen(db)} GROUP BY 1, 2, 3, 4, 5", {"now": now}).fetchall()
    alerting = db.conn.execute(
        "SELECT n.provider, n.board, n.firmware_version, n.micropython_version,"
        " count(DISTINCT n.id) FROM alerts a JOIN nodes n ON n.id = a.node_id"
        f" WHERE a.state != 'resolved' AND {seen_n}"
        " GROUP BY 1, 2, 3, 4"
    ).fetchall()
    empty = {"total": 0, "online": 0, "offline": 0, "new": 0, "alerting": 0}
    out: dict = {"all": dict(empty), "provider": {}, "board": {}, "firmware": {},
                 "micropython": {}}
    keys = ("provider", "board", "firmware", "micropython")

    def groups(values):
        yield out["all"]
        for key, value in zip(keys, values, strict=True):
            yield out[key].setdefault(value or "-", dict(empty))

    for *values, status, n in rows:
        for group in groups(values):
            group["total"] += n
            group[status] += n
    for *values, n in alerting:
        for group in groups(values):
            group["alerting"] += n
    return out


def node_status(db, node_id, now=None) -> str:
    """online, offline or new, by the same rule as the lists."""
    row = db.conn.execute(
        f"SELECT {STATUS_SQL} FROM nodes WHERE id = :id AND {_seen_row(db, node_id)}",
        {"now": time.time() if now is None else now, "id": node_id}).fetchone()
    if row is None:
        raise UnknownNode(f"unknown node {node_id!r}")
    return row[0]


def node_place(db, node_id) -> dict:
    """A node's position: lat, lon (WGS84 degrees) and a free-text location."""
    row = db.conn.execute(
        f"SELECT lat, lon, location FROM nodes WHERE id = ? AND {_seen_row(db, node_id)}",
        (node_id,)).fetchone()
    if row is None:
        raise UnknownNode(f"unknown node {node_id!r}")
    return {"lat": row[0], "lon": row[1], "location": row[2]}


def set_place(db, node_id, lat, lon, location, actor=None):
    """Set a node's position and location text (None clears); audited."""
    owned_node(db, node_id)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET lat = ?, lon = ?, location = ? WHERE id = ?",
                     (lat, lon, location, node_id))
        audit.insert(conn, time.time(), actor, "node.place", node_id,
                     {"lat": lat, "lon": lon, "location": location})


def set_name_and_tags(db, node_id, name, tags, actor=None):
    """Set a node's display name and tags; audited."""
    owned_node(db, node_id)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET name = ?, tags = ? WHERE id = ?",
                     (name, json.dumps(list(tags)), node_id))
        forget_readable(conn)  # a tag grant may have reached the node through a tag it lost
        audit.insert(conn, time.time(), actor, "node.edit", node_id,
                     {"name": name, "tags": list(tags)})


def tag_nodes(db, node_ids, tag, remove=False, actor=None) -> int:
    """Add (or remove) one tag on many nodes in one transaction; return how many changed."""
    sql = (_UNTAG if remove else _TAG)[db.dialect] + " AND " + _owned(db)
    with transaction(db) as conn:
        changed = conn.executemany(sql, [{"tag": tag, "id": i} for i in node_ids]).rowcount
        forget_readable(conn)  # as in set_name_and_tags
        audit.insert(conn, time.time(), actor, "bulk.untag" if remove else "bulk.tag", tag,
                     {"nodes": len(node_ids), "changed": changed})
    return changed


def positions(db, now=None) -> list[dict]:
    """Every node with a position: id, name, lat, lon, status (alerting wins over the rest)."""
    rows = db.conn.execute(
        f"SELECT id, name, lat, lon, CASE WHEN {ALERTING_SQL} THEN 'alerting' ELSE {STATUS_SQL}"
        f" END FROM nodes WHERE lat IS NOT NULL AND lon IS NOT NULL AND {_seen(db)}",
        {"now": time.time() if now is None else now})
    return [{"id": r[0], "name": r[1], "lat": r[2], "lon": r[3], "status": r[4]} for r in rows]


def position_bounds(db) -> tuple:
    """(count, min lat, max lat, min lon, max lon) of the nodes that have a position."""
    return db.conn.execute(
        "SELECT count(*), min(lat), max(lat), min(lon), max(lon) FROM nodes"
        f" WHERE lat IS NOT NULL AND lon IS NOT NULL AND {_seen(db)}").fetchone()


def position_cells(db, lat1, lon0, kx, span, cells, now=None) -> list[tuple]:
    """(column, row, count, worst status rank) of positioned nodes binned on a cells x cells grid.

    Columns grow east from lon0, rows grow south from lat1; span is the side in degrees of
    latitude, kx the cosine correction for longitude. Rank: 0 new, 1 online, 2 offline, 3 alerting.
    """
    rank = (f"CASE WHEN {ALERTING_SQL} THEN 3 ELSE CASE {STATUS_SQL} WHEN 'new' THEN 0"
            " WHEN 'online' THEN 1 ELSE 2 END END")
    least, floor = LEAST[db.dialect], TRUNCATE[db.dialect]
    return db.conn.execute(
        f"SELECT {least}({floor.format('(lon - :lon0) * :kx / :span * :cells')}, :cells - 1),"
        f" {least}({floor.format('(:lat1 - lat) / :span * :cells')}, :cells - 1),"
        f" count(*), max({rank}) FROM nodes WHERE lat IS NOT NULL AND lon IS NOT NULL"
        f" AND {_seen(db)}"
        " GROUP BY 1, 2",
        {"lon0": lon0, "lat1": lat1, "kx": kx, "span": span, "cells": cells,
         "now": time.time() if now is None else now}).fetchall()


# A rollout's target keys -> the node column each one matches exactly.
TARGET_COLUMNS = (("board", "board"), ("provider", "provider"), ("version", "firmware_version"),
                  ("micropython", "micropython_version"))


def unknown_ids(db, node_ids: list[str], shared_too: bool = False) -> list[str]:
    """The ids in node_ids that no node of the connection's organisation has (shared_too: nor
    any node shared with it, for what only reads), in the order given."""
    if not node_ids:
        return []  # and `IN ()` is SQLite's only
    known = {r[0] for r in db.conn.execute(
        f"SELECT id FROM nodes WHERE id IN ({','.join('?' * len(node_ids))})"
        f" AND {_seen(db) if shared_too else _owned(db)}", node_ids)}
    return [i for i in node_ids if i not in known]


def select_target(db, target: dict) -> list[dict]:
    """Nodes matching every given criterion of a rollout's target (tags: all of them; nodes:
    explicit ids), by id."""
    # Only nodes on the 'polylink' profile run our firmware: other suppliers' devices are
    # monitored, never updated.
    sql = ("SELECT id, board, provider, firmware_version, micropython_version, tags, org_id"
           " FROM nodes"
           f" WHERE profile = 'polylink' AND {_owned(db)}")
    args = []
    for key, col in TARGET_COLUMNS:
        if target.get(key):
            sql += f" AND {col} = ?"
            args.append(target[key])
    for tag in target.get("tags") or []:
        sql += " AND " + HAS_TAG[db.dialect].format("?")
        args.append(tag)
    ids = target.get("nodes")
    if ids:
        sql += f" AND id IN ({','.join('?' * len(ids))})"
        args += ids
    return list(db.query(sql + " ORDER BY id", args))


def readable(db, node_id: str) -> bool:
    """Whether the connection's scope reads node node_id (owns it, or was given it)."""
    return db.conn.execute(f"SELECT 1 FROM nodes WHERE id = ? AND {_seen_row(db, node_id)}",
                           (node_id,)).fetchone() is not None


def last_seen(db, node_id: str) -> float | None:
    """When the fleet last heard from a node (None: never, or no such node)."""
    row = db.conn.execute(
        f"SELECT last_seen FROM nodes WHERE id = ? AND {_seen_row(db, node_id)}",
        (node_id,)).fetchone()
    return row[0] if row else None
