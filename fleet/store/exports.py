"""Export destinations, their durable cursors over readings and events, and refused items.

A cursor is a position in the store's insertion order: the rowid of the last reading and the id
of the last event a destination has been handed. SQLite gives rowids in commit order (one writer
at a time), and a reader inside one transaction sees one snapshot, so "everything after the
cursor" never skips a row that commits later with a smaller rowid.
"""

import json

from .base import DuplicateName, first, transaction
from .scope import scope_of

# Where a destination's secret is sent: an edit that changes it must give the secret again.
DESTINATION = ("kind", "url")


def save_destination(db, row: dict, keep_secret: bool, start_at_end: bool) -> bool:
    """Insert or replace a destination by name; keep_secret keeps the stored secret.

    A new destination's cursor starts after the newest stored row (start_at_end) or before the
    first; an edited one keeps its cursor. False, and nothing saved, when keep_secret would send
    the stored secret to another URL or kind than the one it was given for.
    """
    scope = scope_of(db)
    with transaction(db) as conn:
        if conn.execute("SELECT 1 FROM export_destinations WHERE name = ?"
                        f" AND NOT ({scope.owns()})", (row["name"],)).fetchone():
            raise DuplicateName(f"destination name {row['name']!r} is taken: choose another")
        old = conn.execute("SELECT secret, kind, url FROM export_destinations WHERE name = ?",
                           (row["name"],)).fetchone()
        if old is not None and keep_secret:
            if old[0] is not None and tuple(old[1:]) != tuple(row[k] for k in DESTINATION):
                return False
            row = dict(row, secret=old[0])
        if old is not None:
            row = dict(row, created=conn.execute(
                "SELECT created FROM export_destinations WHERE name = ?",
                (row["name"],)).fetchone()[0])
        conn.execute("DELETE FROM export_destinations WHERE name = ?", (row["name"],))
        row = dict(row, org_id=scope.org_id)
        cols = ", ".join(row)
        conn.execute(f"INSERT INTO export_destinations ({cols}) VALUES"
                     f" ({', '.join('?' * len(row))})", list(row.values()))
        if old is None:
            r_pos = e_pos = 0
            if start_at_end:
                r_pos = conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()[0]
                e_pos = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
            conn.execute("DELETE FROM export_cursors WHERE destination = ?", (row["name"],))
            conn.execute("INSERT INTO export_cursors (destination, reading_pos, event_pos)"
                         " VALUES (?, ?, ?)", (row["name"], r_pos, e_pos))
    return True


def _decode(row: dict | None) -> dict | None:
    if row is not None:
        for k in ("options", "nodes", "tags"):
            row[k] = json.loads(row[k] or ("{}" if k == "options" else "[]"))
    return row


def list_destinations(db) -> list[dict]:
    """Every destination's row (with its encrypted secret) and cursor state, by name."""
    return [_decode(r) for r in db.query(
        "SELECT d.*, c.reading_pos, c.event_pos, c.delivered, c.refused, c.last_ok,"
        " c.last_error, c.error_since, c.attempts, c.next_try FROM export_destinations d"
        " JOIN export_cursors c ON c.destination = d.name"
        f" WHERE {scope_of(db).owns('d.org_id')} ORDER BY d.name")]


def get_destination(db, name: str) -> dict | None:
    """A destination's row (with its encrypted secret) and cursor state, or None."""
    return _decode(first(
        db, "SELECT d.*, c.reading_pos, c.event_pos, c.delivered, c.refused, c.last_ok,"
        " c.last_error, c.error_since, c.attempts, c.next_try FROM export_destinations d"
        " JOIN export_cursors c ON c.destination = d.name WHERE d.name = ?"
        f" AND {scope_of(db).owns('d.org_id')}", [name]))


def delete_destination(db, name: str) -> bool:
    """Remove a destination, its cursor and its refused items; False if there was none."""
    with transaction(db) as conn:
        gone = conn.execute("DELETE FROM export_destinations WHERE name = ?"
                            f" AND {scope_of(db).owns()}", (name,)).rowcount != 0
        if not gone:
            return False  # none, or another organisation's: its cursor stays
        conn.execute("DELETE FROM export_cursors WHERE destination = ?", (name,))
        conn.execute("DELETE FROM export_refused WHERE destination = ?", (name,))
    return gone


def _selection(nodes: list[str], tags: list[str]) -> tuple[str, list]:
    """SQL condition on node_id for a destination's chosen nodes and tags (none: all nodes)."""
    if not nodes and not tags:
        return "1 = 1", []
    return ("node_id IN (SELECT id FROM nodes WHERE id IN (SELECT value FROM json_each(?))"
            " OR EXISTS (SELECT 1 FROM json_each(nodes.tags) t WHERE t.value IN"
            " (SELECT value FROM json_each(?))))", [json.dumps(nodes), json.dumps(tags)])


def fetch_after(db, reading_pos: int, event_pos: int, nodes: list[str], tags: list[str],
                limit: int) -> tuple[list[tuple], list[tuple], int, int]:
    """The next readings and events after a cursor, of the selected nodes, in one snapshot.

    Returns (readings as (rowid, node, t, qid, inst, value), events as (id, node, t, code, value,
    text), the reading position, the event position) where a position is where the cursor goes
    once these rows are delivered: past rows of other nodes too, so a destination that selects
    few nodes does not scan the same foreign rows again.
    """
    cond, args = _selection(nodes, tags)
    conn = db.conn
    conn.execute("BEGIN")  # one read snapshot for the maxima and the rows
    try:
        r_max = conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()[0]
        e_max = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        readings = conn.execute(
            f"SELECT rowid, node_id, t, qid, inst, value FROM readings WHERE rowid > ?"
            f" AND rowid <= ? AND {cond} ORDER BY rowid LIMIT ?",
            [reading_pos, r_max, *args, limit]).fetchall()
        events = conn.execute(
            f"SELECT id, node_id, t, code, value, text FROM events WHERE id > ? AND id <= ?"
            f" AND {cond} ORDER BY id LIMIT ?", [event_pos, e_max, *args, limit]).fetchall()
    finally:
        conn.execute("COMMIT")
    r_next = readings[-1][0] if len(readings) == limit else max(r_max, reading_pos)
    e_next = events[-1][0] if len(events) == limit else max(e_max, event_pos)
    return readings, events, r_next, e_next


_FACTS = ("SELECT id, name, board, firmware_version, battery, online, last_seen, lat, lon,"
          " location, tags FROM nodes")


def node_facts(db, node_ids=None) -> list[dict]:
    """What an export says about nodes (all of them if node_ids is None), by id: registry
    facts, battery, position, tags."""
    seen = scope_of(db).sees_nodes(dialect=db.dialect)  # the organisation filter
    if node_ids is None:
        return list(db.query(_FACTS + f" WHERE {seen} ORDER BY id"))
    ids = list(node_ids)
    if not ids:
        return []
    return list(db.query(_FACTS + " WHERE id IN (SELECT value FROM json_each(?))"
                         f" AND {seen} ORDER BY id", [json.dumps(ids)]))


def latest_of(db, qids) -> list[tuple]:
    """(node, qid, inst, t, value) of every node's latest value of these quantities."""
    return db.conn.execute(
        "SELECT node_id, qid, inst, t, value FROM latest WHERE qid IN"
        f" (SELECT value FROM json_each(?)) AND {scope_of(db).sees_node_id('node_id', db.dialect)}"
        " ORDER BY node_id, qid, inst",
        [json.dumps(list(qids))]).fetchall()


def advance(db, name: str, reading_pos: int, event_pos: int, delivered: int,
            refused: list[tuple[str, str]], at: float) -> None:
    """Move a destination's cursor after a delivered batch; record what it refused."""
    with transaction(db) as conn:
        conn.execute(
            "UPDATE export_cursors SET reading_pos = ?, event_pos = ?,"
            " delivered = delivered + ?, refused = refused + ?, last_ok = ?, last_error = NULL,"
            " error_since = NULL, attempts = 0, next_try = NULL WHERE destination = ?",
            (reading_pos, event_pos, delivered, len(refused), at, name))
        conn.executemany(
            "INSERT INTO export_refused (destination, item_id, reason, at) VALUES (?, ?, ?, ?)",
            [(name, item_id, reason, at) for item_id, reason in refused])


def record_failure(db, name: str, error: str, at: float, next_try: float) -> None:
    """Remember that a destination is down: why, since when, and when it is tried again."""
    with transaction(db) as conn:
        conn.execute(
            "UPDATE export_cursors SET last_error = ?, error_since = coalesce(error_since, ?),"
            " attempts = attempts + 1, next_try = ? WHERE destination = ?",
            (error, at, next_try, name))


def backlog(db, reading_pos: int, nodes: list[str], tags: list[str]) -> int:
    """How many stored readings of the selected nodes a destination has not been handed yet."""
    return pending(db, reading_pos, nodes, tags)[0]


def pending(db, reading_pos: int, nodes: list[str], tags: list[str]) -> tuple[int, float | None]:
    """(how many readings a destination has not been handed yet, the time of the oldest of them
    or None), in one scan."""
    cond, args = _selection(nodes, tags)
    count, oldest = db.conn.execute(
        f"SELECT count(*), min(t) FROM readings WHERE rowid > ? AND {cond}",
        [reading_pos, *args]).fetchone()
    return count, oldest


def refused_items(db, name: str, limit: int = 50) -> list[dict]:
    """The items a destination refused, newest first."""
    return list(db.query("SELECT item_id, reason, at FROM export_refused WHERE destination = ?"
                         " ORDER BY id DESC LIMIT ?", [name, limit]))


# --- integrators' read-only MQTT logins ------------------------------------------------------


def save_reader(db, name: str, hashed: str, nodes: list[str], tags: list[str],
                created: float) -> None:
    """Insert or replace an integrator's login (a new password replaces the old one)."""
    with transaction(db) as conn:
        conn.execute("DELETE FROM export_readers WHERE name = ?", (name,))
        conn.execute("INSERT INTO export_readers (name, hash, nodes, tags, created)"
                     " VALUES (?, ?, ?, ?, ?)",
                     (name, hashed, json.dumps(nodes), json.dumps(tags), created))


def readers(db) -> list[dict]:
    """Every integrator login with its hash, its selection and the node ids that selects now."""
    out = []
    for r in db.query("SELECT name, hash, nodes, tags, created FROM export_readers ORDER BY name"):
        r["nodes"], r["tags"] = json.loads(r["nodes"]), json.loads(r["tags"])
        r["all_nodes"] = not r["nodes"] and not r["tags"]
        tagged = [row[0] for row in db.conn.execute(
            "SELECT id FROM nodes WHERE EXISTS (SELECT 1 FROM json_each(nodes.tags) t"
            " WHERE t.value IN (SELECT value FROM json_each(?)))", [json.dumps(r["tags"])])]
        r["node_ids"] = sorted(set(r["nodes"]) | set(tagged))
        out.append(r)
    return out


def delete_reader(db, name: str) -> bool:
    with transaction(db) as conn:
        return conn.execute("DELETE FROM export_readers WHERE name = ?", (name,)).rowcount != 0


def set_enabled(db, name: str, enabled: bool) -> bool:
    """Pause or resume a destination; False if there is none of that name."""
    with transaction(db) as conn:
        return conn.execute("UPDATE export_destinations SET enabled = ? WHERE name = ?"
                            f" AND {scope_of(db).owns()}", (int(enabled), name)).rowcount != 0
