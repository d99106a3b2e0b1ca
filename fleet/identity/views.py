"""Web UI for provisioning: register a node (secrets shown once), list identities, revoke."""

import os

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from fleet.identity import claims, provision
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store.base import UnknownNode
from fleet.web import db as web_db
from fleet.web.auth import require
from provisioning import boards
from provisioning.label import label_svg

bp = Blueprint("provision", __name__, url_prefix="/provision")


def _boards() -> list[str]:
    return boards.names()


@bp.route("/", methods=("GET", "POST"))
@require("provisioning")
def index():
    db = web_db.get_db()
    identity = None
    form = {"id": "", "board": "", "name": "", "mac": ""}
    if request.method == "POST":
        form = {k: request.form.get(k, "").strip() for k in form}
        try:
            identity = provision.register(
                db, current_app.config["SETTINGS"], form["id"] or None,
                board=form["board"] or None, name=form["name"] or None,
                mac=form["mac"] or None, actor=g.user["name"])
        except provision.ProvisionError as e:
            flash(f"Not registered: {e}")
    return _page(db, identity=identity, form=form)


def _conflicts(db, claim_list) -> dict[str, list[dict]]:
    """{MAC: its claims not rejected, oldest first} for each MAC a pending claim shares with
    another: the requests an operator compares side by side before approving one."""
    macs = {c["mac"] for c in claim_list if c["state"] == "pending" and c["rivals"]}
    return {mac: identity_store.rival_claims(db, mac) for mac in sorted(macs)}


def _page(db, identity=None, form=None, claim_token=None):
    form = form or {"id": "", "board": "", "name": "", "mac": ""}
    claim_list = identity_store.list_claims(db, limit=100)
    response = make_response(render_template(
        "provision/index.html", boards=_boards(), identities=identity_store.list_identities(db),
        identity=identity, form=form, claims=claim_list, conflicts=_conflicts(db, claim_list),
        image=_image_defaults(),
        tokens=identity_store.list_claim_tokens(db), claim_token=claim_token))
    if identity is not None or claim_token is not None:
        # The page carries secrets once: no cache may keep it.
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/<node_id>/revoke", methods=("POST",))
@require("provisioning")
def revoke(node_id):
    db = web_db.get_db()
    if identity_store.get_credentials(db, node_id) is None:
        abort(404)
    try:
        provision.revoke(db, current_app.config["SETTINGS"], node_id, actor=g.user["name"])
    except provision.ProvisionError as e:
        flash(f"Not revoked: {e}")
    else:
        flash(f"Node {node_id} revoked: the broker refuses it from now on.")
    return redirect(url_for("provision.index"))


@bp.route("/<node_id>/label.svg")
@require("read")
def label(node_id):
    """The node's printable label; its QR code opens the node's page on this fleet."""
    db = web_db.get_db()
    node = web_db.or_404(UnknownNode, node_store.get_node, db, node_id)
    cred = identity_store.get_credentials(db, node_id) or {}
    svg = label_svg(node_id, request.host_url, node["board"], cred.get("dev_eui"))
    return current_app.response_class(svg, mimetype="image/svg+xml")


@bp.route("/claim-tokens", methods=("POST",))
@require("provisioning")
def create_claim_token():
    db = web_db.get_db()
    try:
        uses = int(request.form.get("uses", "1"))
        hours = float(request.form.get("hours", "24"))
        token = claims.create_token(db, current_app.config["SETTINGS"],
                                    request.form.get("board", ""), uses, hours,
                                    request.form.get("auto_approve") == "on", g.user["name"])
    except (ValueError, claims.ClaimError) as e:
        flash(f"No claim token made: {e}")
        return redirect(url_for("provision.index"))
    return _page(db, claim_token=token)


@bp.route("/claim-tokens/<token_id>/revoke", methods=("POST",))
@require("provisioning")
def revoke_claim_token(token_id):
    """End a claim token of the organisation: no board claims with it any more."""
    try:
        claims.revoke_token(web_db.get_db(), current_app.config["SETTINGS"], token_id,
                            g.user["name"])
    except claims.ClaimError:
        abort(404)
    flash(f"Claim token {token_id} revoked: no board claims with it any more.")
    return redirect(url_for("provision.index"))


@bp.route("/claims/<int:claim_id>/<any(approve, reject):decision>", methods=("POST",))
@require("provisioning")
def decide_claim(claim_id, decision):
    db = web_db.get_db()
    if identity_store.get_claim_by_id(db, claim_id) is None:
        abort(404)
    try:
        revoked = claims.decide(db, claim_id, decision == "approve", g.user["name"],
                                None if decision == "approve" else "rejected by a technician",
                                current_app.config["SETTINGS"])
    except claims.ClaimError as e:
        flash(f"Not changed: {e}")
    else:
        flash(f"Claim {claim_id} {decision}d: the board learns it when it next asks."
              + (f" Revoked the identity the other claim got: {', '.join(revoked)}."
                 if revoked else ""))
    return redirect(url_for("provision.index"))


def _image_defaults() -> dict:
    """What the image form starts with: the site's broker as nodes reach it, if configured."""
    host = os.environ.get("NODE_MQTT_HOST", "")
    if not host and request.host.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]"):
        host = request.host.rsplit(":", 1)[0]  # the fleet's address as this browser reaches it
    return {"mqtt_host": host, "mqtt_port": os.environ.get("NODE_MQTT_PORT", "1883"),
            "wifi_ssid": os.environ.get("WIFI_SSID", "")}


@bp.route("/image", methods=("POST",))
@require("provisioning")
def download_image():
    """A registered node's filesystem image to flash, with a new MQTT password inside."""
    db = web_db.get_db()
    f = request.form
    node_id = f.get("node", "")
    try:
        port = int(f.get("mqtt_port") or "1883")
    except ValueError:
        flash(f"No image: broker port {f.get('mqtt_port')!r} is not a number")
        return redirect(url_for("provision.index") + "#image")
    try:
        name, data = provision.build_image(
            db, current_app.config["SETTINGS"], node_id, f.get("mqtt_host", ""), port,
            f.get("wifi_ssid", ""), f.get("wifi_password", ""), actor=g.user["name"])
    except provision.ProvisionError as e:
        flash(f"No image: {e}")
        return redirect(url_for("provision.index") + "#image")
    response = current_app.response_class(data, mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"  # the node's password and WiFi key are inside
    return response
