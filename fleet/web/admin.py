"""Admin pages: the audit log, users and their roles, API tokens (role admin only)."""

from flask import Blueprint, flash, redirect, render_template, request, url_for

from fleet.store import audit as audit_store
from fleet.store import users as user_store
from fleet.store.base import StoreError
from fleet.web import auth
from fleet.web import db as web_db
from fleet.web.params import query_int

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE = 50


@bp.route("/audit")
@auth.require("admin")
def audit():
    actor = request.args.get("actor", "").strip() or None
    target = request.args.get("target", "").strip() or None
    before = query_int("before")
    rows = audit_store.audit_log(web_db.get_db(), AUDIT_PAGE + 1, actor, target, before)
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    return render_template("admin/audit.html", rows=rows, actor=actor or "", target=target or "",
                           next_before=rows[-1]["id"] if more else None)


@bp.route("/users", methods=("GET", "POST"))
@auth.require("admin")
def users():
    db = web_db.get_db()
    status = 200
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        role = request.form.get("role", "")
        try:
            if request.form.get("action") == "add":
                auth.create_user(db, name, request.form.get("password", ""), role,
                                 actor=auth.actor())
                flash(f"User {name} ({role}) added.")
            else:
                auth.check_role(role)
                user_store.set_user_role(db, name, role, actor=auth.actor())
                flash(f"User {name} is now {role}.")
        except (auth.AuthError, StoreError) as e:
            flash(f"Not changed: {e}")
            status = 400
        else:
            return redirect(url_for("admin.users"))
    return render_template("admin/users.html", users=user_store.list_users(db),
                           tokens=user_store.list_tokens(db), roles=auth.ROLES,
                           areas=auth.AREAS), status
