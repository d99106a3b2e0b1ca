"""Admin pages: the audit log, users and their roles, API tokens (role admin only)."""

from flask import Blueprint, flash, redirect, render_template, request, url_for

from fleet.store import audit as audit_store
from fleet.store import users as user_store
from fleet.store.base import StoreError
from fleet.web import accounts, auth
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


@bp.route("/tokens/revoke", methods=("POST",))
@auth.require("admin")
def revoke_token():
    name = request.form.get("name", "")
    try:
        user_store.revoke_token(web_db.get_db(), name, actor=auth.actor())
    except StoreError as e:
        flash(f"Not revoked: {e}")
    else:
        flash(f"Token {name} revoked; it now answers 401.")
    return redirect(url_for("admin.users"))


@bp.route("/users/manage", methods=("POST",))
@auth.require("admin")
def manage_user():
    """Disable, enable, rename a user or reset their password (each audited by the store)."""
    db = web_db.get_db()
    name = request.form.get("name", "")
    action = request.form.get("action", "")
    one_time = None
    try:
        if action in ("disable", "enable"):
            revoked = user_store.set_disabled(db, name, action == "disable", actor=auth.actor())
            flash(f"User {name} {action}d" + (f"; {revoked} of their tokens revoked."
                                                if revoked else "."))
        elif action == "rename":
            new_name = request.form.get("new_name", "").strip()
            accounts.rename(db, name, new_name, actor=auth.actor())
            flash(f"User {name} is now {new_name}.")
        elif action == "reset":
            one_time = accounts.reset_password(db, name, actor=auth.actor())
        else:
            raise auth.AuthError(f"unknown action {action!r}")
    except (auth.AuthError, StoreError) as e:
        flash(f"Not changed: {e}")
        return redirect(url_for("admin.users"))
    if one_time is None:
        return redirect(url_for("admin.users"))
    # Shown in this answer only: a flashed message would travel in the (signed, not secret) cookie.
    return render_template("admin/users.html", users=user_store.list_users(db),
                           tokens=user_store.list_tokens(db), roles=auth.ROLES,
                           areas=auth.AREAS, one_time=(name, one_time))
