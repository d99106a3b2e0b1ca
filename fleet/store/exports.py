"""Export destinations, their durable cursors over readings and events, and refused items.

A cursor position is a pair (transaction, id): where the last reading and the last event a
destination has been handed stand in commit order. Nothing may commit behind a cursor later, or
the cursor would step over it:
- SQLite commits one writer at a time and gives rowids in that order, and a reader inside one
  transaction sees one snapshot, so the transaction part is always 0 and "every rowid after the
  cursor up to the largest one seen" never skips a row.
- PostgreSQL runs several writers at once (N ingest workers): a transaction may take id 10, another
  id 11 and commit first. Each row records the transaction that wrote it (xact, migration 0029),
  rows are walked by (xact, id), and only below the horizon: the oldest transaction still running
  when the batch is read (pg_snapshot_xmin). Every transaction below it has ended, so no row can
  appear there later; a row of a transaction still open is handed once that transaction ends.
  One long-open transaction holds the horizon (and so every destination) back until it ends.
  Readings are found in that order through reading_commits (migration 0038): a row per
  transaction that stored readings, with a span of ids that holds them all, read in bounded
  pieces. Events, far fewer, keep an index on (xact, id).
"""

import json

from .base import JSON_VALUES, POSTGRESQL, SQLITE, DuplicateName, first, transaction
from .scope import PLATFORM_ORG, Scope, org_of_scope, scope_of

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
            r_pos = e_pos = START
            if start_at_end:  # what is stored (below the horizon) counts as already there
                _horizon, r_pos, e_pos = _ends(conn)
            conn.execute("DELETE FROM export_cursors WHERE destination = ?", (row["name"],))
            conn.execute("INSERT INTO export_cursors (destination, reading_xact, reading_pos,"
                         " event_xact, event_pos) VALUES (?, ?, ?, ?, ?)",
                         (row["name"], *r_pos, *e_pos))
    return True


def _decode(row: dict | None) -> dict | None:
    if row is not None:
        for k in ("options", "nodes", "tags"):
            row[k] = json.loads(row[k] or ("{}" if k == "options" else "[]"))
        row["reading_at"] = (row.pop("reading_xact"), row["reading_pos"])
        row["event_at"] = (row.pop("event_xact"), row["event_pos"])
    return row


_STATE = ("SELECT d.*, c.reading_xact, c.reading_pos, c.event_xact, c.event_pos, c.delivered,"
          " c.refused, c.last_ok, c.last_error, c.error_since, c.attempts, c.next_try"
          " FROM export_destinations d JOIN export_cursors c ON c.destination = d.name")


def list_destinations(db) -> list[dict]:
    """Every destination's row (with its encrypted secret) and cursor state, by name."""
    return [_decode(r) for r in db.query(
        _STATE + f" WHERE {scope_of(db).owns('d.org_id')} ORDER BY d.name")]


def get_destination(db, name: str) -> dict | None:
    """A destination's row (with its encrypted secret) and cursor state, or None."""
    return _decode(first(db, _STATE + f" WHERE d.name = ? AND {scope_of(db).owns('d.org_id')}",
                         [name]))


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


def _in_list(dialect: str) -> str:
    """`IN (...)` the elements of a JSON array given as the statement's next parameter."""
    return f"IN (SELECT value FROM {JSON_VALUES[dialect].format('?')})"


def _tagged(dialect: str) -> str:
    """A node (the row `nodes`) has one of the tags of a JSON array given as a parameter."""
    return (f"EXISTS (SELECT 1 FROM {JSON_VALUES[dialect].format('nodes.tags')}"
            f" WHERE value {_in_list(dialect)})")


def _selection(dialect: str, nodes: list[str], tags: list[str],
               org_id: int = PLATFORM_ORG) -> tuple[str, list]:
    """SQL condition on node_id for a destination's chosen nodes and tags (none: all nodes),
    within what the destination's organisation may read (its own nodes and those shared with it;
    the platform operator's: every node). The organisation is the destination's, not the
    connection's: the worker and /metrics read every destination through one connection."""
    seen = Scope(org_id, platform=org_id == PLATFORM_ORG).sees_node_id("node_id", dialect)
    if not nodes and not tags:
        return seen, []
    return (f"node_id IN (SELECT id FROM nodes WHERE id {_in_list(dialect)}"
            f" OR {_tagged(dialect)}) AND {seen}", [json.dumps(nodes), json.dumps(tags)])


# PostgreSQL: log the transactions of readings stored with ids of their own (fleet db copy), which
# the triggers of migration 0038 cannot see; the migration logs the rows before it the same way.
LOG_READING_COMMITS = (
    "INSERT INTO reading_commits (xact, first_id, last_id)"
    " SELECT xact, min(id), max(id) FROM readings GROUP BY xact"
    " ON CONFLICT (xact) DO UPDATE SET first_id = least(reading_commits.first_id,"
    " excluded.first_id), last_id = greatest(reading_commits.last_id, excluded.last_id)")


# The first position of a cursor (before every row), and its parts by dialect: the columns of a
# row's position, the key a cursor walks, "after a position" and "at or below the horizon" (on
# SQLite the largest rowid seen; on PostgreSQL the oldest transaction still running).
START = (0, 0)
_ID = {("readings", SQLITE): "rowid", ("events", SQLITE): "id", ("events", POSTGRESQL): "id"}
# (Named apart from the columns: PostgreSQL's ORDER BY would take an output column called xact,
# the bigint, and sort every row instead of walking the (xact, id) index.)
_POSITION = {SQLITE: "0 AS at_xact, {id} AS at_id",
             POSTGRESQL: "CAST(CAST(xact AS text) AS bigint) AS at_xact, id AS at_id"}
_AFTER = {SQLITE: "{id} > ?", POSTGRESQL: "(xact, id) > (CAST(? AS xid8), ?)"}
_BELOW = {SQLITE: "{id} <= ?", POSTGRESQL: "xact < CAST(? AS xid8)"}
_LAST = {SQLITE: "ORDER BY {id} DESC", POSTGRESQL: "ORDER BY xact DESC, id DESC"}
_FIRST = {SQLITE: "ORDER BY {id}", POSTGRESQL: "ORDER BY xact, id"}


def _after(dialect: str, table: str, at: tuple[int, int]) -> tuple[str, list]:
    sql = _AFTER[dialect].format(id=_ID[table, dialect])
    return sql, ([at[1]] if dialect == SQLITE else [str(at[0]), at[1]])


def _ends(conn) -> tuple[object, tuple[int, int], tuple[int, int]]:
    """(horizon, position of the last reading below it, of the last event below it).

    Every row at or below the horizon is committed and visible now, and no row can commit there
    later. SQLite: the largest rowid (one writer at a time). PostgreSQL: the oldest transaction
    still running, as text for a CAST(? AS xid8).
    """
    if conn.dialect == SQLITE:
        r_max = conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()[0]
        e_max = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        return r_max, (0, r_max), (0, e_max)  # rowids and ids: two horizons in one
    horizon = conn.execute(
        "SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text)").fetchone()[0]
    # A reading position may name an id past its transaction's last reading: the end of its span.
    r_last = conn.execute(
        "SELECT CAST(CAST(xact AS text) AS bigint) AS at_xact, last_id FROM reading_commits"
        " WHERE xact < CAST(? AS xid8) ORDER BY xact DESC LIMIT 1", [horizon]).fetchone()
    e_last = conn.execute(
        f"SELECT {_POSITION[POSTGRESQL]} FROM events WHERE xact < CAST(? AS xid8)"
        f" {_LAST[POSTGRESQL]} LIMIT 1", [horizon]).fetchone()
    return horizon, tuple(r_last) if r_last else START, tuple(e_last) if e_last else START


# PostgreSQL: one read of readings looks at most this many commits' spans, and at most this many
# ids per reading asked for, so its cost is bounded however far behind the cursor is (the rows
# stored before 0038, or copied by `fleet db copy`, are one span of every id they had).
_SPANS_PER_READ = 64
_IDS_PER_READING = 4
_READS_PER_FETCH = 16  # such reads in one fetch_after at most
# Each span's rows in id order, at most as many as asked for (the walk down readings' id index
# stops there), then the spans in commit order.
_READINGS_IN_SPANS = (
    "SELECT CAST(CAST(r.xact AS text) AS bigint), r.id, {columns}"
    " FROM unnest(CAST(? AS bigint[]), CAST(? AS bigint[]), CAST(? AS bigint[])) AS s(x, lo, hi)"
    " CROSS JOIN LATERAL (SELECT * FROM readings WHERE id BETWEEN s.lo AND s.hi"
    " AND xact = CAST(CAST(s.x AS text) AS xid8) AND {cond} ORDER BY id LIMIT ?) AS r"
    " ORDER BY s.x, r.id LIMIT ?")


def _readings_after_pg(conn, columns: str, at: tuple[int, int], horizon, end: tuple[int, int],
                       cond: str, args: list, limit: int) -> tuple[list[tuple], tuple[int, int]]:
    """PostgreSQL: (readings after position `at` below the horizon in commit order, each as
    (id, *columns); the position after them). Fewer than `limit` rows does not mean the end: the
    position then stands after every span read (`end` once the last one below the horizon is)."""
    commits = conn.execute(
        "SELECT CAST(CAST(xact AS text) AS bigint) AS at_xact, first_id, last_id"
        " FROM reading_commits WHERE xact >= CAST(? AS xid8) AND xact < CAST(? AS xid8)"
        " ORDER BY xact LIMIT ?", [str(at[0]), horizon, _SPANS_PER_READ]).fetchall()
    ids_left = limit * _IDS_PER_READING
    spans = []
    for xact, lo, hi in commits:
        if xact == at[0]:
            lo = max(lo, at[1] + 1)  # this transaction's rows up to the cursor were handed
        if lo > hi:
            continue
        hi = min(hi, lo + ids_left - 1)
        spans.append((xact, lo, hi))
        ids_left -= hi - lo + 1
        if ids_left <= 0:
            break
    if not spans:
        return [], max(end, tuple(at))
    rows = conn.execute(
        _READINGS_IN_SPANS.format(columns=columns, cond=cond),
        [[s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans], *args, limit,
         limit],
    ).fetchall()
    if len(rows) == limit:
        return [tuple(r[1:]) for r in rows], tuple(rows[-1][:2])
    return [tuple(r[1:]) for r in rows], max((spans[-1][0], spans[-1][2]), tuple(at))


def _rows_after(conn, table: str, columns: str, at: tuple[int, int], below, cond: str,
                args: list, limit: int) -> tuple[list[tuple], tuple[int, int] | None]:
    """(rows of `table` after position `at` and below the horizon, in commit order, each as
    (id, *columns); the position of the last one, None if there is none)."""
    d = conn.dialect
    after, after_args = _after(d, table, at)
    id_ = _ID[table, d]
    query = (f" FROM {table} WHERE {after} AND {_BELOW[d].format(id=id_)} AND {cond}"
             f" {_FIRST[d].format(id=id_)} LIMIT ?")
    params = [*after_args, below, *args, limit]
    if d == SQLITE:  # the rows as they come: a batch's rows are not copied (docs/benchmarks.md)
        rows = conn.execute(f"SELECT {id_}, {columns}{query}", params).fetchall()
        return rows, ((0, rows[-1][0]) if rows else None)
    rows = conn.execute(f"SELECT {_POSITION[d]}, {columns}{query}", params).fetchall()
    return [tuple(r[1:]) for r in rows], (tuple(rows[-1][:2]) if rows else None)


def fetch_after(db, reading_at: tuple[int, int], event_at: tuple[int, int], nodes: list[str],
                tags: list[str], limit: int, org_id: int = PLATFORM_ORG,
                ) -> tuple[list[tuple], list[tuple], tuple, tuple]:
    """The next readings and events after a cursor, of the selected nodes, in commit order.

    Returns (readings as (id, node, t, qid, inst, value), events as (id, node, t, code, value,
    text), the reading position, the event position) where a position is where the cursor goes
    once these rows are delivered: past rows of other nodes too, so a destination that selects
    few nodes does not scan the same foreign rows again. Only nodes organisation org_id (the
    destination's) may read are selected.
    """
    cond, args = _selection(db.dialect, nodes, tags, org_id)
    conn = db.conn
    conn.execute("BEGIN")  # one read snapshot for the horizon and the rows
    try:
        if db.dialect == POSTGRESQL:
            # A span's readings by walking the id index in order, stopping at the rows asked
            # for: the planner, which takes the xact filter for far more selective than it is,
            # would read the whole span by bitmap and sort it (twice the time per read).
            conn.execute("SET LOCAL enable_bitmapscan = off")
        horizon, r_end, e_end = _ends(conn)
        e_below = horizon if db.dialect == POSTGRESQL else e_end[1]
        if db.dialect == POSTGRESQL:
            # Bounded reads until the batch is full or the end is reached: a destination that
            # selects few nodes finds few of its rows in one read's spans.
            readings, r_next = [], tuple(reading_at)
            for _ in range(_READS_PER_FETCH):
                got, went = _readings_after_pg(conn, "node_id, t, qid, inst, value", r_next,
                                               horizon, r_end, cond, args, limit - len(readings))
                readings += got
                moved, r_next = went != r_next, went
                if len(readings) == limit or not moved or r_next >= r_end:
                    break
        else:
            readings, r_last = _rows_after(conn, "readings", "node_id, t, qid, inst, value",
                                           reading_at, r_end[1], cond, args, limit)
            r_next = r_last if len(readings) == limit else max(r_end, tuple(reading_at))
        events, e_last = _rows_after(conn, "events", "node_id, t, code, value, text", event_at,
                                     e_below, cond, args, limit)
    finally:
        conn.execute("COMMIT")
    e_next = e_last if len(events) == limit else max(e_end, tuple(event_at))
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
    return list(db.query(f"{_FACTS} WHERE id {_in_list(db.dialect)} AND {seen} ORDER BY id",
                         [json.dumps(ids)]))


def latest_of(db, qids) -> list[tuple]:
    """(node, qid, inst, t, value) of every node's latest value of these quantities."""
    return db.conn.execute(
        f"SELECT node_id, qid, inst, t, value FROM latest WHERE qid IN (SELECT CAST(value AS"
        f" INTEGER) FROM {JSON_VALUES[db.dialect].format('?')})"
        f" AND {scope_of(db).sees_node_id('node_id', db.dialect)} ORDER BY node_id, qid, inst",
        [json.dumps(list(qids))]).fetchall()


def advance(db, name: str, reading_at: tuple[int, int], event_at: tuple[int, int],
            delivered: int, refused: list[tuple[str, str]], at: float) -> None:
    """Move a destination's cursor to positions (fetch_after's) after a delivered batch; record
    what it refused."""
    with transaction(db) as conn:
        conn.execute(
            "UPDATE export_cursors SET reading_xact = ?, reading_pos = ?, event_xact = ?,"
            " event_pos = ?, delivered = delivered + ?, refused = refused + ?, last_ok = ?,"
            " last_error = NULL, error_since = NULL, attempts = 0, next_try = NULL"
            " WHERE destination = ?",
            (*reading_at, *event_at, delivered, len(refused), at, name))
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


def backlog(db, reading_at: tuple[int, int], nodes: list[str], tags: list[str],
            org_id: int = PLATFORM_ORG) -> int:
    """How many stored readings of the selected nodes a destination has not been handed yet."""
    return pending(db, reading_at, nodes, tags, org_id)[0]


def pending(db, reading_at: tuple[int, int], nodes: list[str],
            tags: list[str], org_id: int = PLATFORM_ORG) -> tuple[int, float | None]:
    """(how many readings a destination has not been handed yet, the time of the oldest of them
    or None), in one scan. Rows above the horizon count: they are stored, only not yet sure to
    be in order."""
    cond, args = _selection(db.dialect, nodes, tags, org_id)
    if db.dialect == POSTGRESQL:  # by the commits after the cursor's (migration 0038)
        return db.conn.execute(
            "SELECT count(*), min(r.t) FROM reading_commits AS s CROSS JOIN LATERAL"
            " (SELECT t FROM readings WHERE id BETWEEN s.first_id AND s.last_id AND xact = s.xact"
            f" AND (s.xact > CAST(? AS xid8) OR id > ?) AND {cond}) AS r"
            " WHERE s.xact >= CAST(? AS xid8)",
            [str(reading_at[0]), reading_at[1], *args, str(reading_at[0])]).fetchone()
    after, after_args = _after(db.dialect, "readings", reading_at)
    count, oldest = db.conn.execute(
        f"SELECT count(*), min(t) FROM readings WHERE {after} AND {cond}",
        [*after_args, *args]).fetchone()
    return count, oldest


def refused_items(db, name: str, limit: int = 50) -> list[dict]:
    """The items a destination refused, newest first."""
    return list(db.query("SELECT item_id, reason, at FROM export_refused WHERE destination = ?"
                         " ORDER BY id DESC LIMIT ?", [name, limit]))


# --- integrators' read-only MQTT logins ------------------------------------------------------


def save_reader(db, name: str, hashed: str, nodes: list[str], tags: list[str],
                created: float) -> None:
    """Insert or replace an integrator's login (a new password replaces the old one), in the
    scope's organisation; a name another organisation holds is taken."""
    org_id = org_of_scope(db)
    with transaction(db) as conn:
        holder = conn.execute("SELECT org_id FROM export_readers WHERE name = ?",
                              (name,)).fetchone()
        if holder is not None and holder[0] != org_id:
            raise DuplicateName(f"the reader name {name!r} is taken")
        conn.execute("DELETE FROM export_readers WHERE name = ?", (name,))
        conn.execute("INSERT INTO export_readers (name, hash, nodes, tags, created, org_id)"
                     " VALUES (?, ?, ?, ?, ?, ?)",
                     (name, hashed, json.dumps(nodes), json.dumps(tags), created, org_id))


def readers(db, every_organisation: bool = False) -> list[dict]:
    """The scope's integrator logins (every organisation's for the broker's files), each with
    its hash, its selection and the node ids that selects now: only nodes its organisation may
    read. `all_nodes` is True only for the platform operator's logins with no selection; another
    organisation's login with no selection gets its organisation's nodes by id."""
    where = "true" if every_organisation else scope_of(db).owns("org_id")
    out = []
    for r in db.query("SELECT name, hash, nodes, tags, created, org_id FROM export_readers"
                      f" WHERE {where} ORDER BY name"):
        r["nodes"], r["tags"] = json.loads(r["nodes"]), json.loads(r["tags"])
        platform = r["org_id"] == PLATFORM_ORG
        chosen = bool(r["nodes"] or r["tags"])
        r["all_nodes"] = platform and not chosen
        seen = Scope(r["org_id"], platform=platform).sees_nodes(dialect=db.dialect)
        if chosen:
            sql, args = (f"SELECT id FROM nodes WHERE (id {_in_list(db.dialect)}"
                         f" OR {_tagged(db.dialect)}) AND {seen}",
                         [json.dumps(r["nodes"]), json.dumps(r["tags"])])
        else:
            sql, args = f"SELECT id FROM nodes WHERE {seen}", []
        r["node_ids"] = sorted(row[0] for row in db.conn.execute(sql, args))
        out.append(r)
    return out


def delete_reader(db, name: str) -> bool:
    with transaction(db) as conn:
        return conn.execute(
            f"DELETE FROM export_readers WHERE name = ? AND {scope_of(conn).owns('org_id')}",
            (name,)).rowcount != 0


def set_enabled(db, name: str, enabled: bool) -> bool:
    """Pause or resume a destination; False if there is none of that name."""
    with transaction(db) as conn:
        return conn.execute("UPDATE export_destinations SET enabled = ? WHERE name = ?"
                            f" AND {scope_of(db).owns()}", (int(enabled), name)).rowcount != 0
