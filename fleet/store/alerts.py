"""Alerts: opened and resolved by their conditions over the store, acknowledged by people."""

import time

from . import audit
from .base import POSTGRESQL, AlertResolved, BadFilter, UnknownAlert, transaction
from .nodes import ALLOWANCE_SQL, BATTERY_LOW, DEFAULT_INTERVAL
from .scope import one_node, scope_of

BATTERY_OK = 3.5  # V: at or above it the alert resolves itself (hysteresis, no flapping)
BOOT_LOOP_BOOTS = 3  # boots within BOOT_LOOP_WINDOW seconds
BOOT_LOOP_WINDOW = 3600
BAD_FRAMES_WINDOW = 3600
UPDATE_FAILED_WINDOW = 7 * 86400
FRAMES_LOST_WINDOW = 3600
ALERT_KINDS = ("offline", "battery_low", "boot_loop", "bad_frames", "update_failed",
               "certificate", "frames_lost")
# The subject of a fleet-wide alert (a TLS certificate) in the alerts' node_id column.
FLEET_SUBJECT = "fleet:tls-"
# The texts that differ by dialect: a UTC time, a voltage with 2 decimals, the index hint
# (SQLite only; PostgreSQL's planner takes the time range on its own), one row per node.
_DIALECT = {
    "sqlite": {
        "utc": "datetime(last_seen, 'unixepoch')",
        "volts": "round(battery, 2)",
        "hint": "INDEXED BY status_log_t_boots",
        "one_per_node": "",
        "group_per_node": " GROUP BY rn.node_id",
    },
    POSTGRESQL: {
        "utc": "to_char(to_timestamp(last_seen) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
        "volts": "round(battery::numeric, 2)::float8",
        "hint": "",
        "one_per_node": "DISTINCT ON (rn.node_id) ",
        "group_per_node": " ORDER BY rn.node_id, rn.updated DESC",
    },
}


def evaluate_alerts(db, now=None) -> dict[str, int]:
    """Open alerts whose condition holds, resolve those whose condition cleared; counts opened."""
    now = time.time() if now is None else now
    d = _DIALECT[db.dialect]
    offline = f"last_seen IS NOT NULL AND (online = 0 OR last_seen < :now - {ALLOWANCE_SQL})"
    # Per kind: the rows to open (node, kind, detail) and, over the alerts table, when an
    # unresolved alert of that kind has cleared. Clears are correlated on the alert's node, so
    # they look only at nodes that have an unresolved alert.
    # INDEXED BY: with ANALYZE statistics the planner prefers a skip-scan of status_log_node_t,
    # about 100 times slower than this range scan of the last hour.
    boot_loop = (
        f"SELECT node_id FROM status_log {d['hint']}"
        f" WHERE t >= :now - {BOOT_LOOP_WINDOW} GROUP BY node_id"
        f" HAVING max(boots) - min(boots) >= {BOOT_LOOP_BOOTS}"
    )
    # A node that reported frames it failed to encode or queue (STATUS lost) within the hour.
    frames_lost = (
        "SELECT node_id FROM status_log INDEXED BY status_log_t_boots"
        f" WHERE t >= :now - {FRAMES_LOST_WINDOW} AND lost > 0 GROUP BY node_id"
    )
    conditions = {
        "offline": (
            f"SELECT id, 'offline', 'no contact since ' || {d['utc']}"
            f" || ' UTC; reports every ' || coalesce(interval, {DEFAULT_INTERVAL}) || ' s'"
            f" FROM nodes WHERE {offline}",
            f"EXISTS (SELECT 1 FROM nodes WHERE nodes.id = alerts.node_id AND NOT ({offline}))",
        ),
        "battery_low": (
            f"SELECT id, 'battery_low', 'battery ' || {d['volts']} || ' V'"
            f" FROM nodes WHERE battery < {BATTERY_LOW}",
            "EXISTS (SELECT 1 FROM nodes WHERE nodes.id = alerts.node_id"
            f" AND (battery IS NULL OR battery >= {BATTERY_OK}))",
        ),
        "boot_loop": (
            "SELECT node_id, 'boot_loop', (max(boots) - min(boots)) || ' boots in the last '"
            f" || {BOOT_LOOP_WINDOW // 60} || ' min' FROM status_log {d['hint']}"
            f" WHERE t >= :now - {BOOT_LOOP_WINDOW} GROUP BY node_id"
            f" HAVING max(boots) - min(boots) >= {BOOT_LOOP_BOOTS}",
            f"node_id NOT IN ({boot_loop})",
        ),
        # A node whose update failed or rolled back in a rollout of the last week; it clears
        # when a later rollout of that node succeeds (or by hand).
        "update_failed": (
            f"SELECT {d['one_per_node']}rn.node_id, 'update_failed',"
            " 'update to ' || r.release || ' '"
            " || replace(rn.state, '_', ' ') || coalesce(': ' || rn.reason, '')"
            " FROM rollouts r JOIN rollout_nodes rn ON rn.rollout_id = r.id"
            f" WHERE r.updated >= :now - {UPDATE_FAILED_WINDOW}"
            " AND rn.state IN ('failed', 'rolled_back') AND NOT EXISTS (SELECT 1 FROM"
            " rollout_nodes s WHERE s.node_id = rn.node_id AND s.state = 'succeeded'"
            f" AND s.updated > rn.updated){d['group_per_node']}",
            "EXISTS (SELECT 1 FROM rollout_nodes WHERE rollout_nodes.node_id = alerts.node_id"
            " AND state = 'succeeded' AND updated > alerts.opened)",
        ),
        "frames_lost": (
            "SELECT node_id, 'frames_lost', max(lost) || ' frames lost on the node (not"
            " encoded or not queued in flash) in the last hour' FROM status_log INDEXED BY"
            f" status_log_t_boots WHERE t >= :now - {FRAMES_LOST_WINDOW} AND lost > 0"
            " GROUP BY node_id",
            f"node_id NOT IN ({frames_lost})",
        ),
        "bad_frames": (
            "SELECT node_id, 'bad_frames', count(*) || ' bad frames in the last hour'"
            f" FROM bad_frames WHERE received_at >= :now - {BAD_FRAMES_WINDOW}"
            " AND node_id IS NOT NULL GROUP BY node_id",
            f"node_id NOT IN (SELECT node_id FROM bad_frames WHERE received_at >= :now -"
            f" {BAD_FRAMES_WINDOW} AND node_id IS NOT NULL)",
        ),
    }
    opened = {}
    with transaction(db) as conn:
        for kind, (open_sql, clear_sql) in conditions.items():
            conn.execute(
                "UPDATE alerts SET state = 'resolved', resolved_by = 'auto', resolved_at = :now"
                f" WHERE kind = '{kind}' AND state != 'resolved' AND {clear_sql}",
                {"now": now})
            # The partial unique index keeps one unresolved alert per node and kind. (WHERE true:
            # without it SQLite reads ON CONFLICT as part of the SELECT's join.)
            opened[kind] = conn.execute(
                "INSERT INTO alerts (node_id, kind, detail, opened)"
                f" SELECT *, :now FROM ({open_sql}) AS due WHERE true ON CONFLICT DO NOTHING",
                {"now": now}).rowcount
        # New alerts belong to their node's organisation (the queries above name no org).
        conn.execute("UPDATE alerts SET org_id = (SELECT n.org_id FROM nodes n"
                     " WHERE n.id = alerts.node_id) WHERE state = 'open' AND opened = :now"
                     " AND EXISTS (SELECT 1 FROM nodes n WHERE n.id = alerts.node_id"
                     " AND n.org_id != alerts.org_id)", {"now": now})
    return opened


def open_alert(db, node_id, kind, detail, now=None) -> bool:
    """Open an alert of a kind for a node (e.g. update_failed from OTA); False if already open."""
    if kind not in ALERT_KINDS:
        raise BadFilter(f"alert kind {kind!r}: expected one of {', '.join(ALERT_KINDS)}")
    with transaction(db) as conn:
        return conn.execute(
            "INSERT INTO alerts (node_id, kind, detail, opened, org_id) VALUES (?, ?, ?, ?,"
            " coalesce((SELECT org_id FROM nodes WHERE id = ?), 1)) ON CONFLICT DO NOTHING",
            (node_id, kind, detail, time.time() if now is None else now, node_id)).rowcount == 1


def sync_certificate_alerts(db, due: dict[str, str], now=None) -> int:
    """Open a "certificate" alert per certificate due for renewal ({role: detail}), resolve those
    no longer due (renewed); return how many opened."""
    now = time.time() if now is None else now
    opened = 0
    with transaction(db) as conn:
        for role, detail in due.items():
            subject = FLEET_SUBJECT + role
            opened += conn.execute(
                "INSERT INTO alerts (node_id, kind, detail, opened)"
                " VALUES (?, 'certificate', ?, ?) ON CONFLICT DO NOTHING",
                (subject, detail, now)).rowcount
            conn.execute("UPDATE alerts SET detail = ? WHERE node_id = ? AND kind = 'certificate'"
                         " AND state != 'resolved'", (detail, subject))
        keep = [FLEET_SUBJECT + role for role in due] or [""]
        conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_by = 'auto', resolved_at = ?"
            " WHERE kind = 'certificate' AND state != 'resolved'"
            f" AND node_id NOT IN ({', '.join('?' * len(keep))})", (now, *keep))
    return opened


def list_alerts(db, node_id=None, unresolved=True, limit=50) -> list[dict]:
    """Alerts, newest first: unresolved ones (open or acknowledged), or all."""
    scope = scope_of(db)
    # One node's alerts are tested row by row; all of them against the set of visible nodes.
    seen = (one_node(db, node_id, scope.sees_node_id_of_row("a.node_id", db.dialect))
            if node_id is not None else scope.sees_node_id("a.node_id", db.dialect))
    sql = ("SELECT a.*, n.name AS node_name FROM alerts a LEFT JOIN nodes n ON n.id = a.node_id"
           f" WHERE {seen}")
    args: list = []
    if unresolved:
        sql += " AND a.state != 'resolved'"
    if node_id is not None:
        sql += " AND a.node_id = ?"
        args.append(node_id)
    sql += " ORDER BY a.id DESC LIMIT ?"
    args.append(limit)
    return list(db.query(sql, args))


def get_alert(db, alert_id) -> dict:
    """One alert; raise UnknownAlert if there is none with that id."""
    rows = list(db.query("SELECT * FROM alerts WHERE id = ? AND "
                         f" {scope_of(db).sees_node_id_of_row('node_id', db.dialect)}", [alert_id]))
    if not rows:
        raise UnknownAlert(f"no alert {alert_id}")
    return rows[0]


def change_alert(db, alert_id, action, actor=None) -> dict:
    """Acknowledge or resolve an alert; audited. Return the alert."""
    if action not in ("ack", "resolve"):
        raise BadFilter(f"alert action {action!r}: expected ack or resolve")
    now = time.time()
    with transaction(db) as conn:
        # Only the node's own organisation acts on its alerts (a shared node's are read only).
        row = conn.execute("SELECT node_id, kind, state FROM alerts WHERE id = ? AND "
                           f" {scope_of(db).owns_node_id('node_id')}", (alert_id,)).fetchone()
        if row is None:
            raise UnknownAlert(f"no alert {alert_id}")
        if row[2] == "resolved":
            raise AlertResolved(f"alert {alert_id} is already resolved")
        if action == "ack":
            conn.execute("UPDATE alerts SET state = 'acked', acked_by = ?, acked_at = ?"
                         " WHERE id = ?", (actor, now, alert_id))
        else:
            conn.execute("UPDATE alerts SET state = 'resolved', resolved_by = ?, resolved_at = ?"
                         " WHERE id = ?", (actor, now, alert_id))
        audit.insert(conn, now, actor, f"alert.{action}", row[0],
                     {"alert": alert_id, "kind": row[1]})
    return {"id": alert_id, "node_id": row[0], "kind": row[1]}


def open_alert_counts(db) -> dict[tuple[str, str], int]:
    """{(kind, state): count} of the alerts not resolved (/metrics)."""
    return {(kind, state): n for kind, state, n in db.conn.execute(
        "SELECT kind, state, count(*) FROM alerts WHERE state != 'resolved'"
        f" AND {scope_of(db).sees_node_id('node_id', db.dialect)} GROUP BY 1, 2")}
