"""REST API for registering nodes: POST /api/v1/nodes mints an identity; revoke; rotate."""

from flask import Blueprint, current_app, g, jsonify, request

from fleet.identity import claims, provision
from fleet.store import identity as identity_store
from fleet.web import db as web_db
from fleet.web.api import ApiError, iso, known_fields, limit_param
from fleet.web.auth import require

bp = Blueprint("identity", __name__)
_FIELDS = {"id", "board", "name", "mac"}


def _body() -> dict:
    body = request.get_json(silent=True)
    if body is None and not request.data:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, 'body must be a JSON object like {"board": "HELTEC_V3"} '
                            "(Content-Type: application/json)")
    return body


@bp.post("/nodes")
@require("provisioning")
def register():
    body = _body()
    known_fields(body, _FIELDS, say_expected=True)
    for key in _FIELDS:
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError(400, f'field "{key}" must be a string')
    db = web_db.get_db()
    try:
        identity = provision.register(db, current_app.config["SETTINGS"], body.get("id"),
                                      board=body.get("board"), name=body.get("name"),
                                      mac=body.get("mac"), actor=f"token:{g.token_name}")
    except provision.ProvisionError as e:
        status = 409 if "already" in str(e) else 400
        raise ApiError(status, str(e)) from None
    response = jsonify(identity)
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"  # it carries secrets shown only this once
    return response


def _identity(node_id: str) -> dict:
    cred = identity_store.get_credentials(web_db.get_db(), node_id)
    if cred is None:
        raise ApiError(404, f"node {node_id!r} has no registered identity")
    return cred


@bp.get("/nodes/<node_id>/identity")
@require("read")
def identity(node_id):
    """The non-secret part of a node's identity."""
    c = _identity(node_id)
    return jsonify({"node_id": node_id, "mqtt_user": c["mqtt_user"], "dev_eui": c["dev_eui"],
                    "join_eui": c["join_eui"], "ota_key_ids": sorted(c["ota_keys"]),
                    "mac": c["mac"], "created": iso(c["created"]), "created_by": c["created_by"],
                    "revoked_at": iso(c["revoked_at"]), "revoked_by": c["revoked_by"]})


@bp.post("/nodes/<node_id>/revoke")
@require("provisioning")
def revoke(node_id):
    _identity(node_id)
    try:
        provision.revoke(web_db.get_db(), current_app.config["SETTINGS"], node_id,
                         actor=f"token:{g.token_name}")
    except provision.ProvisionError as e:
        raise ApiError(409, str(e)) from None
    return jsonify({"node_id": node_id, "revoked": True})


@bp.post("/nodes/<node_id>/rotate")
@require("provisioning")
def rotate(node_id):
    _identity(node_id)
    try:
        password = provision.rotate(web_db.get_db(), current_app.config["SETTINGS"], node_id,
                                    actor=f"token:{g.token_name}")
    except provision.ProvisionError as e:
        raise ApiError(409, str(e)) from None
    response = jsonify({"node_id": node_id, "mqtt": {"user": node_id, "password": password}})
    response.headers["Cache-Control"] = "no-store"
    return response


def claim_json(c: dict) -> dict:
    """The API's view of a zero-touch claim (no secrets: the token's id only). `rivals`: the
    other claims for its MAC not rejected; `conflict`: it asked while one of them existed."""
    return {"id": c["id"], "state": c["state"], "mac": c["mac"], "board": c["board"],
            "token_id": c["token_id"], "client_id": c["client_id"], "node_id": c["node_id"],
            "conflict": bool(c["conflict"]), "rivals": c.get("rivals", []),
            "requested_at": iso(c["requested_at"]), "decided_at": iso(c["decided_at"]),
            "decided_by": c["decided_by"], "reason": c["reason"]}


@bp.get("/claims")
@require("read")
def list_claims():
    """Claims, newest first: ?state=pending (the default), approved, rejected, issued or all."""
    state = request.args.get("state", "pending")
    if state not in identity_store.CLAIM_STATES + ("all",):
        raise ApiError(400, f"state must be one of {', '.join(identity_store.CLAIM_STATES)} or all")
    limit = limit_param(200)
    rows = identity_store.list_claims(web_db.get_db(), limit, None if state == "all" else state)
    return jsonify({"claims": [claim_json(c) for c in rows]})


@bp.post("/claims/<int:claim_id>/<any(approve, reject):decision>")
@require("provisioning")
def decide_claim(claim_id, decision):
    """Approve or reject a pending claim (audited); the board learns it when it next asks."""
    body = _body()
    if set(body) - {"reason"} or not isinstance(body.get("reason", ""), str | None):
        raise ApiError(400, 'body is empty or {"reason": "why"}')
    reason = (body.get("reason") or "").strip()[:200] or None
    db = web_db.get_db()
    if identity_store.get_claim_by_id(db, claim_id) is None:
        raise ApiError(404, f"no claim {claim_id}")
    try:
        revoked = claims.decide(db, claim_id, decision == "approve", f"token:{g.token_name}",
                                reason, current_app.config["SETTINGS"])
    except claims.ClaimError as e:
        raise ApiError(409, str(e)) from None
    return jsonify(dict(claim_json(identity_store.get_claim_by_id(db, claim_id)),
                        revoked=revoked))


_IMAGE_FIELDS = {"mqtt_host", "mqtt_port", "wifi_ssid", "wifi_password"}


@bp.post("/nodes/<node_id>/image")
@require("provisioning")
def node_image(node_id):
    """The node's LittleFS image (application/octet-stream) with a new MQTT password inside."""
    body = _body()
    known_fields(body, _IMAGE_FIELDS, say_expected=True)
    port = body.get("mqtt_port", 1883)
    if not isinstance(port, int) or isinstance(port, bool):
        raise ApiError(400, 'field "mqtt_port" must be an integer')
    for key in _IMAGE_FIELDS - {"mqtt_port"}:
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError(400, f'field "{key}" must be a string')
    db = web_db.get_db()
    if identity_store.get_credentials(db, node_id) is None:
        raise ApiError(404, f"no node {node_id!r} is registered")
    try:
        name, data = provision.build_image(
            db, current_app.config["SETTINGS"], node_id, body.get("mqtt_host") or "", port,
            body.get("wifi_ssid") or "", body.get("wifi_password") or "",
            actor=f"token:{g.token_name}")
    except provision.ProvisionError as e:
        raise ApiError(400, str(e)) from None
    response = current_app.response_class(data, mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response
