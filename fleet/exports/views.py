"""Export destinations in the web UI (/exports) and the REST API (/api/v1/exports); admin area.

A destination's secret (webhook HMAC key, broker password, bearer token) is write-only: it is
accepted on create or edit, stored encrypted, and only `secret_set` is ever shown back. An edit
that moves it (kind, URL) must give it again.
"""

import json
import mimetypes

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
from werkzeug.routing import BaseConverter

from fleet.web import db as web_db
from fleet.web import metrics
from fleet.web.api import ApiError, iso, json_body, limit_param
from fleet.web.auth import require

from . import ADAPTERS, ExportError, ngsild_api, readers, registry

ui = Blueprint("exports", __name__, url_prefix="/exports")
api = Blueprint("exports", __name__, url_prefix="/exports")  # under /api/v1


class DestinationName(BaseConverter):
    """Any path part but `readers`: /exports/readers is the logins' list, so PUT or DELETE on it
    must answer 405 (Allow: GET), not reach a destination named `readers`."""

    regex = "(?!readers$)[^/]+"


@api.record_once
def _converter(state):
    # Runs before the routes below are added (deferred in the order they were recorded).
    state.app.url_map.converters["destination"] = DestinationName


_FIELDS = {"kind", "url", "options", "nodes", "tags", "enabled", "secret", "from_start"}
_FORM = ("name", "kind", "url", "options", "nodes", "tags")


def _data_dir():
    return current_app.config["SETTINGS"].data_dir


def _api_view(d: dict) -> dict:
    return dict(d, created=iso(d["created"]), last_ok=iso(d["last_ok"]),
                error_since=iso(d["error_since"]), next_try=iso(d["next_try"]))


@ui.route("/", methods=("GET", "POST"))
@require("admin")
def index():
    db = web_db.get_db()
    form = {k: "" for k in _FORM}
    if request.method == "POST":
        form = {k: request.form.get(k, "").strip() for k in _FORM}
        try:
            options = json.loads(form["options"]) if form["options"] else {}
        except ValueError as e:
            flash(f"Not saved: options must be a JSON object: {e}")
        else:
            cfg = dict(form, options=options)
            try:
                d = registry.add(db, _data_dir(), cfg, request.form.get("secret") or None,
                                 actor=g.user["name"],
                                 from_start=request.form.get("from_start") == "on")
            except registry.SecretNeeded as e:
                flash(f"Not saved: {e}: fill in the Secret field.")
            except ExportError as e:
                flash(f"Not saved: {e}")
            else:
                flash(f"Destination {d['name']} saved; the export worker picks it up within"
                      " seconds.")
                return redirect(url_for("exports.index"))
    destinations = registry.list_all(db)
    refused = {d["name"]: registry.refused(db, d["name"], 5) for d in destinations
               if d["refused"]}
    return render_template("exports/index.html", destinations=destinations, refused=refused,
                           form=form, kinds={k: a.LABEL for k, a in sorted(ADAPTERS.items())})


@ui.route("/<name>/enabled", methods=("POST",))
@require("admin")
def enabled(name):
    on = request.form.get("enabled") == "1"
    try:
        registry.set_enabled(web_db.get_db(), name, on, actor=g.user["name"])
    except KeyError:
        flash(f"No destination {name}.")
    else:
        flash(f"Destination {name} {'resumed' if on else 'paused'}.")
    return redirect(url_for("exports.index"))


@ui.route("/<name>/remove", methods=("POST",))
@require("admin")
def remove(name):
    try:
        registry.remove(web_db.get_db(), name, actor=g.user["name"])
    except KeyError:
        flash(f"No destination {name}.")
    else:
        flash(f"Destination {name} removed.")
    return redirect(url_for("exports.index"))


@api.get("")
@require("admin")
def api_list():
    return jsonify([_api_view(d) for d in registry.list_all(web_db.get_db())])


@api.get("/<destination:name>")
@require("admin")
def api_get(name):
    db = web_db.get_db()
    try:
        d = registry.get(db, name)
        refused = registry.refused(db, name, limit_param(50, most=1000))
    except KeyError:
        raise ApiError(404, f"no export destination named {name!r}") from None
    return jsonify(dict(_api_view(d), refused_items=[dict(r, at=iso(r["at"])) for r in refused]))


@api.put("/<destination:name>")
@require("admin")
def api_put(name):
    body = json_body('{"kind": "webhook", "url": "https://...", "secret": "..."}', _FIELDS,
                     say_expected=True)
    cfg = dict(body, name=name)
    secret = cfg.pop("secret", None)
    from_start = cfg.pop("from_start", False)
    if not isinstance(from_start, bool):
        raise ApiError(400, "from_start must be true or false")
    try:
        d = registry.add(web_db.get_db(), _data_dir(), cfg, secret,
                         actor=f"token:{g.token_name}", from_start=from_start)
    except registry.SecretNeeded as e:
        raise ApiError(400, f'{e}: give field "secret"') from None
    except ExportError as e:
        raise ApiError(400, str(e)) from None
    return jsonify(_api_view(d))


@api.delete("/<destination:name>")
@require("admin")
def api_delete(name):
    try:
        registry.remove(web_db.get_db(), name, actor=f"token:{g.token_name}")
    except KeyError:
        raise ApiError(404, f"no export destination named {name!r}") from None
    return "", 204


@api.get("/readers")
@require("admin")
def api_readers():
    """Integrators' read-only MQTT logins (never a password)."""
    return jsonify([dict(r, created=iso(r["created"]))
                    for r in readers.list_all(web_db.get_db())])


@api.put("/readers/<name>")
@require("admin")
def api_reader_put(name):
    """Create a read-only MQTT login, or give it a new password; the password is answered once."""
    body = json_body('{"nodes": ["lamp-7"], "tags": ["park"]}', {"nodes", "tags"},
                     say_expected=True)
    db = web_db.get_db()
    existed = any(r["name"] == name for r in readers.list_all(db))
    try:
        r = readers.add(db, current_app.config["SETTINGS"].broker_dir, name,
                        body.get("nodes") or [], body.get("tags") or [],
                        actor=f"token:{g.token_name}")
    except ExportError as e:
        raise ApiError(400, str(e)) from None
    return jsonify(r), 200 if existed else 201  # a new password for a login is no new login


@api.delete("/readers/<name>")
@require("admin")
def api_reader_delete(name):
    try:
        readers.remove(web_db.get_db(), current_app.config["SETTINGS"].broker_dir, name,
                       actor=f"token:{g.token_name}")
    except KeyError:
        raise ApiError(404, f"no reader login named {name!r}") from None
    return "", 204


def init_app(app):
    """The page, the NGSI-LD read side and the export lag on /metrics (api goes under /api/v1,
    web/api.py)."""
    # NGSI-LD brokers fetch the context the Link header names (/static/ngsi-ld-context.jsonld,
    # written from ngsild_terms.context(); a test keeps them equal) as JSON-LD.
    mimetypes.add_type("application/ld+json", ".jsonld")
    app.register_blueprint(ui)
    metrics.register_export_lag(app, registry.lag)
    app.register_blueprint(ngsild_api.bp)
