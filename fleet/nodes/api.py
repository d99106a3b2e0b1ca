"""The nodes' REST API (/api/v1/nodes): nodes, telemetry as SenML, commands and bad frames."""

from contextlib import contextmanager

from flask import Blueprint, current_app, g, jsonify, request, url_for
from polylink import quantities

from fleet.nodes import commands as downlink
from fleet.nodes import export, senml
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import UnknownCommand, UnknownNode
from fleet.web import db as web_db
from fleet.web.api import ApiError, iso, json_body, limit_param, or_404
from fleet.web.auth import require

bp = Blueprint("nodes", __name__)

SENML_JSON = "application/senml+json"
MAX_EXPORT_NODES = 10000


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
        "profile": node.get("profile", "polylink"),
        "shared": bool(node.get("shared")),
        "battery": node["battery"],
        "board": node["board"],
        "rssi": node["rssi"],
        "uptime": node["uptime"],
        "reset_cause": node["reset_cause"],
        "heap_free": node["heap_free"],
        "queue": node["queue"],
        "dropped": node["dropped"],
        "lost": node["lost"],
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
    try:
        return export.parse_time(name, request.args.get(name))
    except export.ExportError as e:
        raise ApiError(400, str(e)) from None


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


def node_or_404(node_id: str) -> dict:
    """The node, or a 404 naming it."""
    return or_404(UnknownNode, node_store.get_node, web_db.get_db(), node_id)


@bp.get("/nodes")
@require("read")
def list_nodes():
    return jsonify({"nodes": [node_json(n) for n in node_store.list_nodes(web_db.get_db())]})


@bp.get("/nodes/<node_id>")
@require("read")
def getnode_or_404(node_id):
    node = node_json(node_or_404(node_id))
    rows = telemetry_store.latest_values(web_db.get_db(), node_id)
    node["latest"] = senml.records(node_id, [(r["t"], r["qid"], r["inst"], r["value"])
                                             for r in rows])
    return jsonify(node)


@bp.get("/nodes/<node_id>/telemetry")
@require("read")
def telemetry(node_id):
    node_or_404(node_id)
    since, until = _time_param("since"), _time_param("until")
    if since is not None and until is not None and since > until:
        raise ApiError(400, "since is after until")
    rows = telemetry_store.readings(web_db.get_db(), node_id, since, until, _quantity_param(),
                                    limit_param())
    response = jsonify(senml.records(node_id, rows))
    response.mimetype = SENML_JSON
    return response


# The HTTP status for each way a downlink can be refused; a subclass before its base.
_DOWNLINK_STATUS = ((downlink.BadCommand, 400), (downlink.BrokerUnavailable, 503),
                    (downlink.TooLarge, 413), (downlink.OverLimit, 429))


@contextmanager
def _downlink_errors():
    try:
        yield
    except downlink.DownlinkError as e:
        for kind, status in _DOWNLINK_STATUS:
            if isinstance(e, kind):
                raise ApiError(status, str(e)) from None
        raise


def _accepted(node_id: str, cid: int, fields: dict):
    """202 Accepted for a queued command, with where to follow its result."""
    url = url_for(".get_command", node_id=node_id, cid=cid)
    response = jsonify({"id": cid, "node_id": node_id, **fields, "url": url})
    response.status_code = 202
    response.headers["Location"] = url
    return response


@bp.post("/nodes/<node_id>/commands")
@require("nodes")
def send_command(node_id):
    body = json_body('{"command": "identify"}', {"command", "arg"})
    command = body.get("command")
    if not isinstance(command, str):
        raise ApiError(400, 'field "command" must be a string: reboot, identify or set_interval')
    node_or_404(node_id)
    with _downlink_errors():
        cid = downlink.send_command(web_db.get_db(), current_app.config["SETTINGS"], node_id,
                                    command, body.get("arg"), created_by=f"token:{g.token_name}")
    return _accepted(node_id, cid, {"command": command})


@bp.post("/nodes/<node_id>/config")
@require("nodes")
def send_config(node_id):
    """A CONFIG downlink: {"interval": s, "status_interval": s}, checked by the node's rules."""
    body = json_body('{"interval": 60, "status_interval": 300}')
    node_or_404(node_id)
    db = web_db.get_db()
    with _downlink_errors():
        fields = downlink.check_config(body)
        cid = downlink.send_config(db, current_app.config["SETTINGS"], node_id,
                                   created_by=f"token:{g.token_name}", **fields)
    return _accepted(node_id, cid, {"command": "config", "config": fields})


@bp.post("/nodes/<node_id>/profile-commands")
@require("nodes")
def send_profile_command(node_id):
    """One of the commands of the node's profile ({"command": name, "data": {...}}), encoded by
    its codec's encodeDownlink and queued with its LoRaWAN provider."""
    body = json_body('{"command": "set-interval", "data": {"interval": 600}}', {"command", "data"})
    if not isinstance(body.get("command"), str):
        raise ApiError(400, 'field "command" must name one of the profile\'s commands')
    node_or_404(node_id)
    with _downlink_errors():
        sent = downlink.send_profile_command(web_db.get_db(), current_app.config["SETTINGS"],
                                             node_id, body["command"], body.get("data"),
                                             actor=f"token:{g.token_name}")
    return jsonify(sent), 202


@bp.get("/nodes/<node_id>/commands/<int:cid>")
@require("read")
def get_command(node_id, cid):
    node_or_404(node_id)
    c = or_404(UnknownCommand, command_store.get_command, web_db.get_db(), node_id, cid)
    return jsonify(command_json(c))


@bp.get("/nodes/<node_id>/bad-frames")
@require("read")
def bad_frames(node_id):
    node = node_or_404(node_id)
    rows = telemetry_store.bad_frames(web_db.get_db(), node_id, limit_param(default=100))
    return jsonify({
        "node_id": node_id,
        "count": node["bad_frames"],
        "frames": [
            {"received_at": iso(r["received_at"]), "provider": r["provider"], "topic": r["topic"],
             # The first bytes only (BAD_PAYLOAD_SHOWN in the store); size is the whole one's.
             "payload_hex": (r["payload"] or b"").hex(), "size": r["size"],
             "truncated": len(r["payload"] or b"") < (r["size"] or 0), "error": r["error"]}
            for r in rows
        ],
    })


def export_nodes(db, raw: str | None) -> list[str]:
    """The node ids of a `nodes=a,b` parameter (every node if empty); 404 naming unknown ones."""
    if not raw:
        return sorted(node_store.known_node_ids(db))
    ids = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if len(ids) > MAX_EXPORT_NODES:
        raise ApiError(400, f"nodes= names {len(ids)} nodes; at most {MAX_EXPORT_NODES} at once "
                            "(leave it out for every node)")
    unknown = node_store.unknown_ids(db, ids, shared_too=True)
    if unknown:
        raise ApiError(404, f"unknown node(s): {', '.join(unknown[:20])}")
    return ids


def export_response(node_ids, since, until, fmt):
    """A streamed download: the first chunk leaves before the last batch is read."""
    if since is not None and until is not None and since > until:
        raise ApiError(400, "since is after until")
    if fmt not in export.FORMATS:
        raise ApiError(400, f"format={fmt!r}: must be one of {', '.join(export.FORMATS)}")
    response = current_app.response_class(
        export.stream_from(current_app.config["DATABASE"], web_db.request_scope(), node_ids,
                           since, until, fmt),
        content_type=export.FORMATS[fmt])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{export.filename(fmt, since, until)}"')
    return response


@bp.get("/export")
@require("read")
def export_readings():
    """Readings of chosen nodes in a time range as CSV or SenML JSON, streamed."""
    db = web_db.get_db()
    since = _time_param("since")
    try:  # a date alone as `until` means to its end, as in the CLI and the node list
        until = export.parse_time("until", request.args.get("until"), end_of_day=True)
    except export.ExportError as e:
        raise ApiError(400, str(e)) from None
    fmt = request.args.get("format") or "csv"
    return export_response(export_nodes(db, request.args.get("nodes")), since, until, fmt)
