"""REST API under /api/v1: nodes, telemetry as SenML, commands and bad frames; bearer tokens."""

import math
from datetime import UTC, datetime

from flask import Blueprint, current_app, g, jsonify, request, url_for
from polylink import quantities
from werkzeug.exceptions import HTTPException

from fleet.nodes import commands as downlink
from fleet.nodes import senml
from fleet.store import alerts as alert_store
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import AlertResolved, UnknownAlert, UnknownCommand, UnknownNode
from fleet.web import db as web_db
from fleet.web.auth import bearer_token, csrf, require

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_LIMIT = 10000
SENML_JSON = "application/senml+json"


class ApiError(Exception):
    """A request the API refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def iso(t) -> str | None:
    """Unix time as ISO 8601 UTC with a Z, or None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def node_json(node: dict) -> dict:
    """The API's view of a node."""
    return {
        "id": node["id"],
        "name": node["name"],
        "online": node["online"],
        "last_seen": iso(node["last_seen"]),
        "firmware_version": node["firmware_version"],
        "micropython_version": node["micropython_version"],
        "provider": node["provider"],
        "battery": node["battery"],
        "board": node["board"],
        "rssi": node["rssi"],
        "uptime": node["uptime"],
        "reset_cause": node["reset_cause"],
        "heap_free": node["heap_free"],
        "queue": node["queue"],
        "dropped": node["dropped"],
        "boots": node["boots"],
        "interval": node["interval"],
        "status_at": iso(node["status_at"]),
        "bad_frames": node["bad_frames"],
        "created": iso(node["created"]),
        "tags": node["tags"],
    }


def command_json(c: dict) -> dict:
    """The API's view of a command and its result."""
    if c["result_at"] is not None:
        state = "done" if c["result_code"] == 0 else "failed"
        result = {"code": c["result_code"], "value": c["result_value"], "text": c["result_text"],
                  "at": iso(c["result_at"])}
    else:
        state = "sent" if c["sent_at"] is not None else "pending"
        result = None
    return {
        "id": c["id"],
        "node_id": c["node_id"],
        "command": c["cmd"],
        "arg": c["arg"],
        "created_by": c["created_by"],
        "created": iso(c["created"]),
        "sent_at": iso(c["sent_at"]),
        "state": state,
        **({"config": c["body"]} if c.get("body") else {}),
        "result": result,
    }


def _time_param(name: str):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise ApiError(
                400, f"{name}={raw!r}: expected unix seconds or ISO 8601 (2026-01-31T12:00:00Z)"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, f"{name}={raw!r}: must be a non-negative finite number")
    return value


def _limit_param(default=1000):
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"limit={raw!r}: expected an integer 1..{MAX_LIMIT}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"limit={value}: must be within 1..{MAX_LIMIT}")
    return value


def _quantity_param():
    raw = request.args.get("quantity")
    if raw is None or raw == "":
        return None
    qids = []
    for part in raw.split(","):
        part = part.strip()
        qid = quantities.lookup(part)
        if qid is None and part.isdigit() and int(part) < quantities.COUNT:
            qid = int(part)
        if qid is None:
            names = ", ".join(q[quantities.NAME] for q in quantities.QUANTITIES)
            raise ApiError(400, f"unknown quantity {part!r}; known: {names}")
        qids.append(qid)
    return qids


def _node(node_id: str) -> dict:
    try:
        return node_store.get_node(web_db.get_db(), node_id)
    except UnknownNode as e:
        raise ApiError(404, str(e)) from None


@bp.before_request
def require_token():
    token = bearer_token()
    if token is None:
        raise ApiError(401, "missing or invalid bearer token (Authorization: Bearer <token>); "
                            "create one with `fleet token create NAME`")
    # The API authenticates by token only: a browser's session cookie grants nothing here.
    g.user = None
    g.token = token
    g.token_name = token["name"]


@bp.get("/nodes")
@require("read")
def list_nodes():
    return jsonify({"nodes": [node_json(n) for n in node_store.list_nodes(web_db.get_db())]})


@bp.get("/nodes/<node_id>")
@require("read")
def get_node(node_id):
    node = node_json(_node(node_id))
    rows = telemetry_store.latest_values(web_db.get_db(), node_id)
    node["latest"] = senml.records(node_id, [(r["t"], r["qid"], r["inst"], r["value"])
                                             for r in rows])
    return jsonify(node)


@bp.get("/nodes/<node_id>/telemetry")
@require("read")
def telemetry(node_id):
    _node(node_id)
    since, until = _time_param("since"), _time_param("until")
    if since is not None and until is not None and since > until:
        raise ApiError(400, "since is after until")
    rows = telemetry_store.readings(web_db.get_db(), node_id, since, until, _quantity_param(),
                                    _limit_param())
    response = jsonify(senml.records(node_id, rows))
    response.mimetype = SENML_JSON
    return response


@bp.post("/nodes/<node_id>/commands")
@require("nodes")
def send_command(node_id):
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, 'body must be a JSON object like {"command": "identify"} '
                            "(Content-Type: application/json)")
    unknown = set(body) - {"command", "arg"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    command = body.get("command")
    if not isinstance(command, str):
        raise ApiError(400, 'field "command" must be a string: reboot, identify or set_interval')
    _node(node_id)
    try:
        cid = downlink.send_command(web_db.get_db(), current_app.config["SETTINGS"], node_id,
                                    command, body.get("arg"), created_by=f"token:{g.token_name}")
    except downlink.BadCommand as e:
        raise ApiError(400, str(e)) from None
    except downlink.BrokerUnavailable as e:
        raise ApiError(503, str(e)) from None
    except downlink.TooLarge as e:
        raise ApiError(413, str(e)) from None
    except downlink.OverLimit as e:
        raise ApiError(429, str(e)) from None
    response = jsonify({
        "id": cid,
        "node_id": node_id,
        "command": command,
        "url": url_for("api.get_command", node_id=node_id, cid=cid),
    })
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_command", node_id=node_id, cid=cid)
    return response


@bp.post("/nodes/<node_id>/config")
@require("nodes")
def send_config(node_id):
    """A CONFIG downlink: {"interval": s, "status_interval": s}, checked by the node's rules."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, 'body must be a JSON object like {"interval": 60, "status_interval": '
                            '300} (Content-Type: application/json)')
    _node(node_id)
    db = web_db.get_db()
    try:
        fields = downlink.check_config(body)
        cid = downlink.send_config(db, current_app.config["SETTINGS"], node_id,
                                   created_by=f"token:{g.token_name}", **fields)
    except downlink.BadCommand as e:
        raise ApiError(400, str(e)) from None
    except downlink.BrokerUnavailable as e:
        raise ApiError(503, str(e)) from None
    except downlink.TooLarge as e:
        raise ApiError(413, str(e)) from None
    except downlink.OverLimit as e:
        raise ApiError(429, str(e)) from None
    url = url_for("api.get_command", node_id=node_id, cid=cid)
    response = jsonify({"id": cid, "node_id": node_id, "command": "config", "config": fields,
                        "url": url})
    response.status_code = 202
    response.headers["Location"] = url
    return response


@bp.get("/nodes/<node_id>/commands/<int:cid>")
@require("read")
def get_command(node_id, cid):
    _node(node_id)
    try:
        return jsonify(command_json(command_store.get_command(web_db.get_db(), node_id, cid)))
    except UnknownCommand as e:
        raise ApiError(404, str(e)) from None


@bp.get("/nodes/<node_id>/bad-frames")
@require("read")
def bad_frames(node_id):
    node = _node(node_id)
    rows = telemetry_store.bad_frames(web_db.get_db(), node_id, _limit_param(default=100))
    return jsonify({
        "node_id": node_id,
        "count": node["bad_frames"],
        "frames": [
            {"received_at": iso(r["received_at"]), "provider": r["provider"], "topic": r["topic"],
             "payload_hex": r["payload"].hex(), "error": r["error"]}
            for r in rows
        ],
    })


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
        _node(node_id)
    rows = alert_store.list_alerts(web_db.get_db(), node_id=node_id,
                                   unresolved=request.args.get("all") != "1",
                                   limit=_limit_param(default=100))
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


def _error(status: int, message: str):
    response = jsonify({"error": message})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="polylink"'
    return response


def init_app(app):
    """Register the blueprint without CSRF (it uses bearer tokens) and JSON errors for /api/."""
    csrf.exempt(bp)
    app.register_blueprint(bp)

    @app.errorhandler(ApiError)
    def api_error(e):
        return _error(e.status, str(e))

    @app.errorhandler(HTTPException)
    def http_error(e):
        if request.path.startswith(bp.url_prefix):
            return _error(e.code or 500, e.description or e.name)
        return e

    @app.errorhandler(Exception)
    def unexpected(e):
        # Never a bare 500 page for API clients; the traceback goes to the log.
        current_app.logger.exception("unhandled error")
        if request.path.startswith(bp.url_prefix):
            return _error(500, f"internal error ({type(e).__name__}); see the server log")
        return "internal error; see the server log", 500


