"""Providers in the web UI (/providers) and the REST API (/api/v1/providers); admin area.

A provider's password (TTS API key, ChirpStack MQTT password) is write-only: it is accepted on
create or edit, stored encrypted, and only `password_set` is ever shown back. An edit that moves
it (host, port or TLS) must give it again.
"""

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from fleet.store import nodes as node_store
from fleet.store import providers as provider_store
from fleet.store.base import StoreError
from fleet.web import db as web_db
from fleet.web.api import ApiError, json_body, limit_param
from fleet.web.auth import require

from . import LORAWAN_KINDS, ProviderError, downlinks, registry

ui = Blueprint("providers", __name__, url_prefix="/providers")
api = Blueprint("providers", __name__, url_prefix="/providers")  # under /api/v1
radio_api = Blueprint("radio", __name__, url_prefix="/nodes")  # under /api/v1
_FIELDS = {"name", "kind", "host", "port", "tls", "application", "tenant", "username",
           "password", "downlinks_per_day"}


def _data_dir():
    return current_app.config["SETTINGS"].data_dir


@ui.route("/", methods=("GET", "POST"))
@require("admin")
def index():
    db = web_db.get_db()
    form = {k: "" for k in _FIELDS - {"password"}}
    if request.method == "POST":
        form = {k: request.form.get(k, "").strip() for k in form}
        cfg = dict(form, tls=request.form.get("tls") == "on")
        for k in ("port", "downlinks_per_day"):
            if not cfg[k]:
                cfg.pop(k)
        try:
            p = registry.add(db, _data_dir(), cfg, request.form.get("password") or None,
                             actor=g.user["name"])
        except registry.PasswordNeeded as e:
            flash(f"Not saved: {e}: fill in the Password field.")
        except ProviderError as e:
            flash(f"Not saved: {e}")
        else:
            flash(f"Provider {p['name']} saved. Restart `fleet provider ingest` (or `fleet run`)"
                  " to connect to it.")
            return redirect(url_for("providers.index"))
    return render_template("providers/index.html", providers=registry.list_all(db), form=form,
                           kinds=LORAWAN_KINDS)


@ui.route("/<name>/remove", methods=("POST",))
@require("admin")
def remove(name):
    try:
        registry.remove(web_db.get_db(), name, actor=g.user["name"])
    except KeyError:
        flash(f"No provider {name}.")
    else:
        flash(f"Provider {name} removed.")
    return redirect(url_for("providers.index"))


@radio_api.get("/<node_id>/receptions")
@require("read")
def api_receptions(node_id):
    """Radio metadata of a node's latest uplink receptions, its transport identities and
    today's downlink budget on each provider (ACKs of confirmed uplinks included)."""
    db = web_db.get_db()
    try:
        node_store.get_node(db, node_id)
    except StoreError as e:
        raise ApiError(404, str(e)) from None
    limit = limit_param(50, most=1000)
    return jsonify({"node_id": node_id, "identities": provider_store.identities(db, node_id),
                    "downlink_budget": downlinks.budgets(db, node_id),
                    "receptions": provider_store.receptions(db, node_id, limit)})


@api.get("")
@require("admin")
def api_list():
    return jsonify(registry.list_all(web_db.get_db()))


@api.put("/<name>")
@require("admin")
def api_put(name):
    body = json_body('{"kind": "tts", "host": ..., "application": ...}', _FIELDS,
                     say_expected=True)
    cfg = dict(body, name=name)
    password = cfg.pop("password", None)
    try:
        p = registry.add(web_db.get_db(), _data_dir(), cfg, password,
                         actor=f"token:{g.token_name}")
    except registry.PasswordNeeded as e:
        raise ApiError(400, f'{e}: give field "password"') from None
    except ProviderError as e:
        raise ApiError(400, str(e)) from None
    return jsonify(p)


@api.delete("/<name>")
@require("admin")
def api_delete(name):
    try:
        registry.remove(web_db.get_db(), name, actor=f"token:{g.token_name}")
    except KeyError:
        raise ApiError(404, f"no provider named {name!r}") from None
    return "", 204


def node_radio(node_id: str) -> dict:
    """For the node page: transport identities, today's downlink budgets and the latest
    receptions with radio metadata."""
    db = web_db.get_db()
    budgets = downlinks.budgets(db, node_id)
    for b in budgets:
        b["text"] = downlinks.describe(b)
    return {"identities": provider_store.identities(db, node_id), "budgets": budgets,
            "receptions": provider_store.receptions(db, node_id, limit=20),
            "frames": provider_store.recent_frames(db, node_id, limit=10)}


def init_app(app):
    """The pages (api and radio_api go under /api/v1, web/api.py)."""
    app.context_processor(lambda: {"node_radio": node_radio})
    app.register_blueprint(ui)
