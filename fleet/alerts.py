"""Alerts: evaluated from the store at most every ALERT_REFRESH seconds; list, acknowledge, resolve.

The web process evaluates when a page that shows alerts is asked for and the last evaluation is
older than ALERT_REFRESH, so alerts are at most that stale while someone looks; `fleet alerts
check` does the same from cron when nobody does. Evaluation is set-based SQL (fleet/db.py).
"""

import threading
import time

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from . import auth
from . import db as store

bp = Blueprint("alerts", __name__, url_prefix="/alerts")

ALERT_REFRESH = 30.0
ALERTS_PAGE = 100  # newest first; a phone should not load thousands
KIND_TEXT = {
    "offline": "offline",
    "battery_low": "battery low",
    "boot_loop": "boot loop",
    "bad_frames": "bad frames",
    "update_failed": "update failed",
}


def refresh(db, force=False):
    """Evaluate alerts unless another thread is or it was done within ALERT_REFRESH seconds."""
    ext = current_app.extensions
    lock = ext["polylink_alerts_lock"]
    if not lock.acquire(blocking=False):
        return
    try:
        if force or time.monotonic() - ext["polylink_alerts_at"] >= ALERT_REFRESH:
            store.evaluate_alerts(db)
            ext["polylink_alerts_at"] = time.monotonic()
    finally:
        lock.release()


@bp.app_template_filter("alert_kind")
def alert_kind(kind):
    return KIND_TEXT.get(kind, kind)


@bp.route("/")
@auth.require("read")
def index():
    db = store.get_db()
    refresh(db)
    show_all = request.args.get("all") == "1"
    return render_template("alerts/index.html", show_all=show_all,
                           alerts=store.list_alerts(db, unresolved=not show_all, limit=ALERTS_PAGE),
                           limit=ALERTS_PAGE)


@bp.route("/<int:alert_id>/<any(ack, resolve):action>", methods=("POST",))
@auth.require("nodes")
def change(alert_id, action):
    try:
        alert = store.change_alert(store.get_db(), alert_id, action, actor=auth.actor())
    except store.StoreError as e:
        flash(f"Not changed: {e}")
        return redirect(url_for("alerts.index")), 303
    flash(f"Alert {alert_id} ({alert_kind(alert['kind'])} on {alert['node_id']}) "
          f"{'acknowledged' if action == 'ack' else 'resolved'}.")
    back = request.form.get("next", "")
    if not back.startswith("/") or back.startswith("//"):
        back = url_for("alerts.index")
    return redirect(back, 303)


def init_app(app):
    app.extensions["polylink_alerts_lock"] = threading.Lock()
    app.extensions["polylink_alerts_at"] = float("-inf")
    app.register_blueprint(bp)
