"""`/api/v1/tokens` and `/api/v1/users`: taking access back through the API (admins only).

Tokens are listed with their last use and revoked; users are listed, disabled, enabled, renamed
or given a one-time password, the same actions as the admin page and `fleet user ...`."""

from flask import Blueprint

from fleet.store import users as user_store
from fleet.store.base import StoreError
from fleet.web import accounts, auth
from fleet.web import db as web_db
from fleet.web.api import ApiError, iso, json_body

bp = Blueprint("access", __name__)


def token_json(t: dict) -> dict:
    return {"name": t["name"], "role": t["role"], "created_by": t["created_by"],
            "created": iso(t["created"]), "last_used": iso(t["last_used"]),
            "revoked": iso(t["revoked_at"])}


@bp.route("/tokens")
@auth.require("admin")
def tokens():
    return {"tokens": [token_json(t) for t in user_store.list_tokens(web_db.get_db())]}


@bp.route("/tokens/<name>/revoke", methods=("POST",))
@auth.require("admin")
def revoke_token(name):
    try:
        user_store.revoke_token(web_db.get_db(), name, actor=auth.actor())
    except StoreError as e:
        raise ApiError(404, str(e)) from None
    return {"revoked": name}


def user_json(u: dict) -> dict:
    return {"name": u["name"], "role": u["role"], "created": iso(u["created"]),
            "disabled": iso(u["disabled_at"])}


@bp.route("/users")
@auth.require("admin")
def users():
    return {"users": [user_json(u) for u in user_store.list_users(web_db.get_db())]}


@bp.route("/users/<name>/<action>", methods=("POST",))
@auth.require("admin")
def user_action(name, action):
    """disable | enable | reset (answers the one-time password, once) | rename {"name": new}."""
    db = web_db.get_db()
    answer = {"user": name, "action": action}
    try:
        if action in ("disable", "enable"):
            answer["tokens_revoked"] = user_store.set_disabled(db, name, action == "disable",
                                                               actor=auth.actor())
        elif action == "rename":
            new_name = json_body('{"name": "sam"}', fields=("name",)).get("name")
            if not isinstance(new_name, str):
                raise ApiError(400, 'body must name the new user name: {"name": "sam"}')
            accounts.rename(db, name, new_name, actor=auth.actor())
            answer["user"] = new_name
        elif action == "reset":
            answer["one_time_password"] = accounts.reset_password(db, name, actor=auth.actor())
        else:
            raise ApiError(404, f"unknown action {action!r}: disable, enable, rename or reset")
    except auth.AuthError as e:
        raise ApiError(400, str(e)) from None
    except StoreError as e:
        raise ApiError(404 if user_store.get_member(db, name) is None else 409, str(e)) from None
    return answer
