"""The organisation switcher in the header and the page of organisations.

The platform operator's organisation sees every organisation side by side (nodes, members,
quotas); everybody else sees the organisations they belong to. The page also holds the
organisation's grants (sharing) and move requests: every member reads them, its admins change
them (the store decides what the organisation may touch: fleet/store/orgs.py).
"""

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from fleet.store import orgs as org_store
from fleet.store.base import StoreError
from fleet.store.nodes import SharedReadOnly
from fleet.store.scope import scope_of
from fleet.web import db as web_db
from fleet.web.auth import local_target, require
from fleet.web.scoping import SESSION_KEY

bp = Blueprint("organisations", __name__, url_prefix="/organisations")


@bp.post("/switch")
@require("read")
def switch():
    """Act for another organisation the user belongs to (404 for one they do not)."""
    raw = request.form.get("org", "")
    if not raw.isdigit() or len(raw) > 18:  # an id, within a 64-bit integer
        abort(400, f"org={raw!r}: expected an organisation's id")
    org_id = int(raw)
    if org_store.membership(web_db.get_db(), g.user["id"], org_id) is None:
        abort(404)
    session[SESSION_KEY] = org_id
    return redirect(local_target(request.form.get("next"), url_for("nodes.index")))


@bp.get("/")
@require("read")
def index():
    db = web_db.get_db()
    me = org_store.get_organisation(db, scope_of(db).org_id)
    return render_template("organisations/index.html", me=me,
                           organisations=org_store.list_organisations(db),
                           shares=org_store.list_shares(db), moves=org_store.list_moves(db))


def _actor() -> str:
    return g.user["name"]


@bp.post("/shares")
@require("admin")
def share():
    """Let another organisation read one node or the nodes with a tag of this organisation."""
    db = web_db.get_db()
    me = org_store.get_organisation(db, scope_of(db).org_id)
    node = request.form.get("node", "").strip() or None
    tag = request.form.get("tag", "").strip() or None
    try:
        grant = org_store.share(db, me["name"], request.form.get("to", "").strip(), node_id=node,
                                tag=tag, actor=_actor())
        flash(f"Grant {grant}: {request.form.get('to')} reads "
              f"{'node ' + node if node else 'tag ' + str(tag)}.")
    except StoreError as e:
        flash(f"Not shared: {e}")
    return redirect(url_for("organisations.index"))


@bp.post("/shares/<int:grant>/revoke")
@require("admin")
def revoke(grant):
    try:
        org_store.revoke_share(web_db.get_db(), grant, actor=_actor())
        flash(f"Grant {grant} revoked.")
    except StoreError as e:
        flash(f"Not revoked: {e}")
    return redirect(url_for("organisations.index"))


@bp.post("/moves")
@require("admin")
def request_move():
    """Ask another organisation to take a node, or its owner for a node shared with us."""
    node = request.form.get("node", "").strip()
    other = request.form.get("to", "").strip()
    try:
        rid = org_store.request_move(web_db.get_db(), node, other, actor=_actor())
        flash(f"Move request {rid}: node {node}, waiting for {other}'s decision.")
    except StoreError as e:
        flash(f"Not asked: {e}")
    return redirect(url_for("organisations.index"))


@bp.post("/moves/<int:request_id>/<any(approve,reject,cancel):action>")
@require("admin")
def decide_move(request_id, action):
    db = web_db.get_db()
    try:
        if action == "cancel":
            org_store.cancel_move(db, request_id, actor=_actor())
            flash(f"Move request {request_id} cancelled.")
        else:
            m = org_store.decide_move(db, request_id, action == "approve", actor=_actor())
            flash(f"Move request {request_id} (node {m['node_id']}) {m['state']}.")
    except org_store.UnknownMoveRequest:
        abort(404)
    except StoreError as e:
        flash(f"Not done: {e}")
    return redirect(url_for("organisations.index"))


def init_app(app):
    app.register_blueprint(bp)

    @app.errorhandler(SharedReadOnly)
    def shared_read_only(e):
        # The node was shared with this organisation: it may know the node exists, so this is
        # a 403 that says why, not the 404 of a node it cannot see.
        if request.path.startswith("/api/"):
            return {"error": str(e)}, 403
        return render_template("error.html", message=f"Not allowed: {e}"), 403

    @app.context_processor
    def organisations_in_templates():
        # The switcher's menu: the organisations the logged-in user belongs to.
        user = g.get("user")
        if user is None:
            return {"my_organisations": []}
        return {"my_organisations": org_store.memberships(web_db.get_db(), user["id"])}
