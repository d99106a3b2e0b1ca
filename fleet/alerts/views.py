"""Alerts: list, acknowledge, resolve; pages show what the periodic evaluation stored.

Evaluation (set-based SQL, db.evaluate_alerts) runs outside any request: in `fleet upkeep`, which
`fleet run` supervises (every UPKEEP_EVERY seconds), or from cron with `fleet alerts check`. A page
never writes; it says when alerts were last evaluated and warns when that is too long ago.
"""


from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from fleet import upkeep
from fleet.store import alerts as alert_store
from fleet.store.base import StoreError
from fleet.web import auth
from fleet.web import db as web_db

bp = Blueprint("alerts", __name__, url_prefix="/alerts")

ALERTS_PAGE = 100  # newest first; a phone should not load thousands
KIND_TEXT = {
    "offline": "offline",
    "battery_low": "battery low",
    "boot_loop": "boot loop",
    "bad_frames": "bad frames",
    "update_failed": "update failed",
    "certificate": "TLS certificate",
    "frames_lost": "frames lost",
}


@bp.app_template_filter("alert_kind")
def alert_kind(kind):
    return KIND_TEXT.get(kind, kind)


@bp.route("/")
@auth.require("read")
def index():
    db = web_db.get_db()
    show_all = request.args.get("all") == "1"
    evaluated = upkeep.alerts_freshness(db, current_app.config["SETTINGS"])
    alerts = alert_store.list_alerts(db, unresolved=not show_all, limit=ALERTS_PAGE)
    return render_template("alerts/index.html", show_all=show_all, alerts=alerts,
                           limit=ALERTS_PAGE, evaluated=evaluated)


@bp.route("/<int:alert_id>/<any(ack, resolve):action>", methods=("POST",))
@auth.require("nodes")
def change(alert_id, action):
    try:
        alert = alert_store.change_alert(web_db.get_db(), alert_id, action, actor=auth.actor())
    except StoreError as e:
        flash(f"Not changed: {e}")
        return redirect(url_for("alerts.index")), 303
    flash(f"Alert {alert_id} ({alert_kind(alert['kind'])} on {alert['node_id']}) "
          f"{'acknowledged' if action == 'ack' else 'resolved'}.")
    return redirect(auth.local_target(request.form.get("next"), url_for("alerts.index")), 303)


def init_app(app):
    app.register_blueprint(bp)
