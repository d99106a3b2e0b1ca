"""Web UI for provisioning: register a node (secrets shown once), list identities, revoke."""

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

from . import db as store
from . import provision
from .auth import require

bp = Blueprint("provision", __name__, url_prefix="/provision")


def _boards() -> list[str]:
    from provisioning import boards

    return boards.names()


def _identities(db) -> list[dict]:
    rows = db.query(
        "SELECT c.node_id, c.dev_eui, c.mac, c.created, c.created_by, c.revoked_at, n.board, "
        "n.name, n.online FROM node_credentials c JOIN nodes n ON n.id = c.node_id "
        "ORDER BY c.created DESC")
    return list(rows)


@bp.route("/", methods=("GET", "POST"))
@require("provisioning")
def index():
    db = store.get_db()
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
    response = make_response(render_template(
        "provision/index.html", boards=_boards(), identities=_identities(db),
        identity=identity, form=form))
    if identity is not None:
        # The page carries the node's secrets once: no cache may keep it.
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/<node_id>/revoke", methods=("POST",))
@require("provisioning")
def revoke(node_id):
    db = store.get_db()
    if store.get_credentials(db, node_id) is None:
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
    from provisioning.label import label_svg

    db = store.get_db()
    try:
        node = store.get_node(db, node_id)
    except store.UnknownNode:
        abort(404)
    cred = store.get_credentials(db, node_id) or {}
    svg = label_svg(node_id, request.host_url, node["board"], cred.get("dev_eui"))
    return current_app.response_class(svg, mimetype="image/svg+xml")
