"""The organisation switcher in the header and the page of organisations.

The platform operator's organisation sees every organisation side by side (nodes, members,
quotas); everybody else sees the organisations they belong to.
"""

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for

from fleet.store import orgs as org_store
from fleet.store.nodes import SharedReadOnly
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
    return render_template("organisations/index.html",
                           organisations=org_store.list_organisations(web_db.get_db()))


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
