"""The alerts' REST API (/api/v1/alerts): list, acknowledge, resolve."""

from flask import Blueprint, g, jsonify, request

from fleet.nodes.api import node_or_404
from fleet.store import alerts as alert_store
from fleet.store.base import AlertResolved, UnknownAlert
from fleet.web import db as web_db
from fleet.web.api import ApiError, iso, limit_param
from fleet.web.auth import require

bp = Blueprint("alerts", __name__)


def alert_json(a: dict) -> dict:
    """The API's view of an alert."""
    return {"id": a["id"], "node_id": a["node_id"], "kind": a["kind"], "state": a["state"],
            "detail": a["detail"], "opened": iso(a["opened"]), "acked_by": a["acked_by"],
            "acked_at": iso(a["acked_at"]), "resolved_by": a["resolved_by"],
            "resolved_at": iso(a["resolved_at"])}


@bp.get("/alerts")
@require("read")
def list_alerts():
    node_id = request.args.get("node") or None
    if node_id is not None:
        node_or_404(node_id)
    rows = alert_store.list_alerts(web_db.get_db(), node_id=node_id,
                                   unresolved=request.args.get("all") != "1",
                                   limit=limit_param(default=100))
    return jsonify({"alerts": [alert_json(a) for a in rows]})


@bp.post("/alerts/<int:alert_id>/<any(ack, resolve):action>")
@require("nodes")
def change_alert(alert_id, action):
    db = web_db.get_db()
    try:
        alert_store.change_alert(db, alert_id, action, actor=f"token:{g.token_name}")
    except UnknownAlert as e:
        raise ApiError(404, str(e)) from None
    except AlertResolved as e:
        raise ApiError(409, str(e)) from None
    return jsonify(alert_json(alert_store.get_alert(db, alert_id)))
