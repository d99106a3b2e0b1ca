"""Suppliers in the web UI (/suppliers/) and the REST API (/api/v1/suppliers,
/api/v1/nodes/<id>/supplier); admin area.

A supplier's token lets its cloud write SenML for its own nodes (HTTPS and the broker), so it is
a credential like an API token or a provider's password: only admins make, see, rotate and
revoke them. A token is in the one answer that creates or rotates it (the page is not cached,
nothing goes through a flash message, which lives in the session cookie) and is stored only as
hashes. A supplier belongs to the organisation whose admin made it; which ones a request sees
is the store's scope (store/suppliers.py), as for every object.
"""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from fleet.broker import auth as brokerauth
from fleet.senml import intake
from fleet.store import profiles as profile_store
from fleet.store import suppliers as supplier_store
from fleet.store.base import DuplicateName, StoreError, UnknownNode
from fleet.store.nodes import SharedReadOnly
from fleet.web import db as web_db
from fleet.web.api import ApiError, iso, json_body
from fleet.web.auth import actor, require

ui = Blueprint("suppliers", __name__, url_prefix="/suppliers")
api = Blueprint("suppliers_api", __name__)  # under /api/v1


def _sync(db) -> None:
    """Broker logins follow the store at once (a revoked supplier's MQTT login goes now)."""
    brokerauth.sync(db, current_app.config["SETTINGS"].broker_dir)


def create(db, name: str) -> str:
    token = intake.add_supplier(db, name, actor=actor())
    _sync(db)
    return token


def rotate(db, name: str) -> str:
    token = intake.rotate_supplier(db, name, actor=actor())
    _sync(db)  # the old token's broker login goes now too
    return token


def revoke(db, name: str) -> list[str]:
    nodes = supplier_store.revoke_supplier(db, name, actor=actor())
    _sync(db)
    return nodes


def assign(db, node_id: str, supplier: str | None) -> None:
    profile_store.set_supplier(db, node_id, supplier, actor=actor())
    _sync(db)


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


# --- API ------------------------------------------------------------------------------------


def _json(s: dict) -> dict:
    return {"name": s["name"], "created": iso(s["created"]), "rotated": iso(s["rotated"]),
            "org_id": s["org_id"], "nodes": s["nodes"]}


@api.get("/suppliers")
@require("admin")
def api_list():
    return jsonify([_json(s) for s in supplier_store.list_suppliers(web_db.get_db())])


@api.post("/suppliers")
@require("admin")
def api_create():
    """A new supplier; its token is in this answer only."""
    body = json_body('{"name": "acme"}', {"name"})
    if not isinstance(body.get("name"), str):
        raise ApiError(400, 'give "name": 1-32 of a-z 0-9 -')
    try:
        token = create(web_db.get_db(), body["name"])
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    except DuplicateName as e:
        raise ApiError(409, str(e)) from None
    return _no_store(make_response(jsonify({"name": body["name"], "token": token}), 201))


@api.post("/suppliers/<name>/rotate")
@require("admin")
def api_rotate(name):
    """A new token for the supplier, in this answer only; the old one stops working now."""
    try:
        token = rotate(web_db.get_db(), name)
    except supplier_store.UnknownSupplier as e:
        raise ApiError(404, str(e)) from None
    return _no_store(jsonify({"name": name, "token": token}))


@api.delete("/suppliers/<name>")
@require("admin")
def api_revoke(name):
    try:
        revoke(web_db.get_db(), name)
    except supplier_store.UnknownSupplier as e:
        raise ApiError(404, str(e)) from None
    return "", 204


@api.put("/nodes/<node_id>/supplier")
@require("admin")
def api_assign(node_id):
    """Let a supplier write SenML for a node ({"supplier": "acme"}), or nobody (null)."""
    body = json_body('{"supplier": "acme"}', {"supplier"})
    supplier = body.get("supplier")
    if "supplier" not in body or not (supplier is None or isinstance(supplier, str)):
        raise ApiError(400, 'give "supplier": a supplier\'s name, or null for none')
    try:
        assign(web_db.get_db(), node_id, supplier)
    except UnknownNode as e:
        raise ApiError(404, str(e)) from None
    except SharedReadOnly:
        raise  # 403, said once for every view (organisations/views.py)
    except StoreError as e:
        raise ApiError(400, str(e)) from None
    return jsonify({"node_id": node_id, "supplier": supplier})


# --- pages ----------------------------------------------------------------------------------


def _page(token=None, made=None, status=200, rotated=False):
    db = web_db.get_db()
    response = make_response(render_template(
        "suppliers/index.html", suppliers=supplier_store.list_suppliers(db), token=token,
        made=made, rotated=rotated), status)
    return _no_store(response)


@ui.route("/", methods=("GET", "POST"))
@require("admin")
def index():
    """The suppliers and their nodes; POST creates one and shows its token this once."""
    if request.method == "GET":
        return _page()
    name = request.form.get("name", "").strip()
    try:
        token = create(web_db.get_db(), name)
    except (ValueError, DuplicateName) as e:
        flash(f"Not created: {e}")
        return _page(status=400)
    return _page(token=token, made=name, status=201)


@ui.route("/<name>/rotate", methods=("POST",))
@require("admin")
def rotate_page(name):
    """A new token for the supplier, shown this once; the old one stops working now."""
    try:
        token = rotate(web_db.get_db(), name)
    except supplier_store.UnknownSupplier:
        abort(404)
    return _page(token=token, made=name, rotated=True)


@ui.route("/<name>/revoke", methods=("POST",))
@require("admin")
def revoke_page(name):
    try:
        nodes = revoke(web_db.get_db(), name)
    except supplier_store.UnknownSupplier as e:
        flash(str(e))
    else:
        flash(f"Supplier {name} revoked: its token no longer works"
              + (f"; {len(nodes)} node(s) released." if nodes else "."))
    return redirect(url_for("suppliers.index"), 303)


@ui.route("/nodes", methods=("POST",))
@require("admin")
def assign_page():
    """Give a node to a supplier, or (empty supplier) take it back."""
    node_id = request.form.get("node_id", "").strip()
    supplier = request.form.get("supplier", "").strip() or None
    try:
        assign(web_db.get_db(), node_id, supplier)
    except StoreError as e:
        flash(f"Not changed: {e}")
    else:
        flash(f"Node {node_id}: supplier {supplier}." if supplier else
              f"Node {node_id}: no supplier writes its SenML now.")
    return redirect(url_for("suppliers.index"), 303)


def init_app(app):
    """The page (api goes under /api/v1, web/api.py)."""
    app.register_blueprint(ui)
