"""`/api/v1/tokens`: API tokens with their last use, and revoking them (admins only)."""

from flask import Blueprint

from fleet.store import users as user_store
from fleet.store.base import StoreError
from fleet.web import auth
from fleet.web import db as web_db
from fleet.web.api import ApiError, iso

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
