"""Taking access back from people: disable, rename, change or reset a user's password (#19).

The store does the writes and the audit; this module checks names and passwords, hashes them,
and serves a user's own password page. Admins use these from the admin page, the API and the CLI.
"""

import secrets

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from fleet.store import users as user_store
from fleet.store.base import StoreError
from fleet.web import auth
from fleet.web import db as web_db

bp = Blueprint("account", __name__, url_prefix="/account")


def rename(db, name: str, new_name: str, actor=None) -> None:
    """Rename a user; raise AuthError on a bad new name."""
    if not auth.USER_NAME.match(new_name or ""):
        raise auth.AuthError(f"user name {new_name!r} must be 1-64 of A-Z a-z 0-9 _ . @ -")
    user_store.rename_user(db, name, new_name, actor=actor)


def change_password(db, name: str, old: str, new: str, actor=None) -> None:
    """Change a user's own password, which needs the old one; ends their other sessions."""
    if auth.check_password(db, name, old) is None:
        raise auth.AuthError("the old password is wrong")
    if len(new) < auth.MIN_PASSWORD:
        raise auth.AuthError(f"password must be at least {auth.MIN_PASSWORD} characters")
    user_store.set_password(db, name, auth.hasher.hash(new), actor=actor)


def reset_password(db, name: str, actor=None) -> str:
    """A new random one-time password for the user, returned once (they must change it)."""
    password = secrets.token_urlsafe(12)
    user_store.set_password(db, name, auth.hasher.hash(password), actor=actor,
                            action="user.reset", one_time=True)
    return password


@bp.before_app_request
def one_time_password_must_change():
    """After an admin's reset, the user's only page is the password page until they change it."""
    user = g.get("user")
    if (user is not None and user["must_change_password"]
            and request.endpoint not in ("account.password", "auth.logout", "static")):
        flash("Your password was reset by an admin: choose your own to go on.")
        return redirect(url_for("account.password"))
    return None


@bp.route("/password", methods=("GET", "POST"))
@auth.require("read")
def password():
    status = 200
    if request.method == "POST":
        db = web_db.get_db()
        name = g.user["name"] if g.get("user") else ""
        try:
            change_password(db, name, request.form.get("old", ""), request.form.get("new", ""),
                            actor=name)
        except (auth.AuthError, StoreError) as e:
            flash(f"Not changed: {e}")
            status = 400
        else:
            # Every other session of this user has ended; this one goes on with the new epoch.
            auth.start_session(user_store.get_user(db, name))
            flash("Password changed; your other sessions have ended.")
            return redirect(url_for("account.password"))
    return render_template("account/password.html"), status
