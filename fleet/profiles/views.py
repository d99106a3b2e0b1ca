"""Device profiles and other suppliers' devices in the web UI (/profiles, /devices) and the REST
API (/api/v1/profiles, /api/v1/devices, /api/v1/nodes/<id>/profile).

Reading needs "read"; creating or changing a profile, trying a codec and registering devices is
the technician's work ("provisioning"), as a technician sets up a new device type in the field.
Every change is audited by the store.
"""

import functools
import json
import time

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for

from fleet.senml import intake
from fleet.senml.records import SenmlError
from fleet.store import profiles as profile_store
from fleet.store.base import StoreError
from fleet.web import db as web_db
from fleet.web.api import ApiError, json_body
from fleet.web.auth import actor, allowed, csrf, current_role, require

from . import CODECS, POLYLINK, devices, service
from .decoding import ProfileError

ui = Blueprint("profiles", __name__)
api = Blueprint("profiles_api", __name__)  # under /api/v1
# Suppliers' clouds post SenML with their own token, not a user's API token: a blueprint of its
# own beside the /api/v1 parent (whose before_request wants a user token).
ingest_bp = Blueprint("senml_ingest", __name__, url_prefix="/api/v1/ingest")
MAX_SENML = 256 << 10
_FIELDS = {"codec", "source", "fields", "interval", "commands", "description"}
MAX_PAYLOADS = 20
MAX_CSV = 1 << 20


def _http(e: Exception) -> ApiError:
    status = 404 if isinstance(e, profile_store.UnknownProfile) else (
        409 if isinstance(e, (profile_store.ProfileInUse,)) else 400)
    return ApiError(status, str(e))


# --- API ------------------------------------------------------------------------------------


@api.get("/profiles")
@require("read")
def api_list():
    return jsonify(profile_store.list_profiles(web_db.get_db()))


@api.get("/profiles/<name>")
@require("read")
def api_get(name):
    try:
        return jsonify(profile_store.get_profile(web_db.get_db(), name))
    except StoreError as e:
        raise _http(e) from None


@api.put("/profiles/<name>")
@require("provisioning")
def api_put(name):
    body = json_body('{"codec": "lpp", "fields": [], "interval": 900}', _FIELDS, True)
    try:
        return jsonify(service.save(web_db.get_db(), dict(body, name=name), actor=actor()))
    except (ProfileError, StoreError) as e:
        raise _http(e) from None


@api.delete("/profiles/<name>")
@require("provisioning")
def api_delete(name):
    if name == POLYLINK:
        raise ApiError(400, "the built-in profile 'polylink' cannot be removed")
    try:
        profile_store.delete_profile(web_db.get_db(), name, actor=actor())
    except StoreError as e:
        raise _http(e) from None
    return "", 204


@api.post("/profiles/try")
@require("provisioning")
def api_try():
    """Decode pasted payloads (hex or base64) and a node's last stored ones with a draft
    profile; nothing is saved."""
    body = json_body('{"codec": "js", "source": "...", "payloads": ["0367010F"]}',
                     _FIELDS | {"name", "payloads", "node_id", "fport"}, True)
    payloads = body.pop("payloads", None) or []
    node_id = body.pop("node_id", None)
    fport = body.pop("fport", 1)
    if not isinstance(payloads, list) or len(payloads) > MAX_PAYLOADS or not all(
            isinstance(p, str) for p in payloads):
        raise ApiError(400, f"payloads must be a list of at most {MAX_PAYLOADS} strings")
    if not isinstance(fport, int) or isinstance(fport, bool) or not 1 <= fport <= 223:
        raise ApiError(400, "fport must be 1..223")
    if node_id is not None and not isinstance(node_id, str):
        raise ApiError(400, "node_id must be a string")
    try:
        return jsonify(service.try_codec(web_db.get_db(), body, payloads, node_id, fport))
    except ProfileError as e:
        raise _http(e) from None


@api.put("/nodes/<node_id>/profile")
@require("provisioning")
def api_assign(node_id):
    body = json_body('{"profile": "lpp-sensor"}', {"profile"})
    if not isinstance(body.get("profile"), str):
        raise ApiError(400, 'give "profile": the name of a device profile')
    try:
        profile_store.assign(web_db.get_db(), node_id, body["profile"], actor=actor())
    except StoreError as e:
        raise ApiError(404, str(e)) from None
    return jsonify({"node_id": node_id, "profile": body["profile"]})


@api.post("/devices")
@require("provisioning")
def api_register():
    """One device ({"dev_eui" or "qr", "profile", "name", "lat", "lon"}) or, with Content-Type
    text/csv, a CSV of them."""
    db = web_db.get_db()
    try:
        if request.mimetype == "text/csv":
            if (request.content_length or 0) > MAX_CSV:
                raise ApiError(413, f"CSV larger than {MAX_CSV >> 20} MB")
            return jsonify(devices.import_csv(db, request.get_data(as_text=True), actor()))
        body = json_body('{"dev_eui": "70B3D57ED0001001", "profile": "lpp-sensor"}',
                         {"dev_eui", "qr", "profile", "name", "lat", "lon", "node_id"}, True)
        code = body.get("qr") or body.get("dev_eui")
        if not isinstance(code, str) or not isinstance(body.get("profile"), str):
            raise ApiError(400, 'give "dev_eui" (or "qr", the scanned code) and "profile"')
        for k in ("name", "node_id"):
            if body.get(k) is not None and not isinstance(body[k], str):
                raise ApiError(400, f"{k} must be a string")
        node = devices.register(db, code, body["profile"], body.get("name"), body.get("lat"),
                                body.get("lon"), body.get("node_id"), actor())
    except devices.DeviceError as e:
        raise ApiError(400, str(e)) from None
    return jsonify({"node_id": node}), 201


def supplier_login(view):
    """Let a view run only for a supplier's token (Authorization: Bearer pls_...)."""

    @functools.wraps(view)
    def wrapped(**kwargs):
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else None
        g.supplier = intake.supplier(web_db.get_db(), token)
        if g.supplier is None:
            resp = jsonify({"error": intake.rotated(web_db.get_db(), token) or (
                "a supplier token is required (Authorization: Bearer pls_...; `fleet supplier"
                " add NAME` makes one)")})
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="polylink-senml"'
            return resp
        return view(**kwargs)

    wrapped.polylink_area = "device"  # type: ignore[attr-defined]
    return wrapped


@ingest_bp.post("/senml")
@supplier_login
def ingest_senml():
    """A SenML pack (application/senml+json or application/senml+cbor) about one of the
    supplier's nodes, named by ?node=ID; stored exactly once per (node, name, time)."""
    db = web_db.get_db()
    node = request.args.get("node", "")
    nodes = profile_store.supplier_nodes(db, g.supplier)
    if node not in nodes:
        # The same answer for a node of another supplier and for no node at all.
        raise ApiError(403, f"node {node!r} is not one of supplier {g.supplier}'s nodes"
                            " (give ?node=ID)")
    if (request.content_length or 0) > MAX_SENML:
        raise ApiError(413, f"a SenML pack is at most {MAX_SENML >> 10} KB")
    fields = profile_store.senml_fields(db).get(node, [])
    try:
        rows, skipped = intake.rows(node, request.get_data(), time.time(), fields)
    except SenmlError as e:
        raise ApiError(400, f"SenML: {e}") from None
    new = profile_store.store_senml(db, rows, time.time())
    return jsonify({"node_id": node, "stored": new, "duplicates": len(rows) - new,
                    "skipped": skipped})


# --- pages ----------------------------------------------------------------------------------


def _form_profile(form) -> dict:
    try:
        fields = json.loads(form.get("fields") or "[]")
        commands = json.loads(form.get("commands") or "[]")
    except ValueError as e:
        raise ProfileError(f"fields and commands must be JSON lists: {e}") from None
    interval = (form.get("interval") or "").strip()
    if interval and not interval.isdigit():
        raise ProfileError("interval must be whole seconds")
    return {"name": (form.get("name") or "").strip(), "codec": form.get("codec"),
            "source": form.get("source") or None, "fields": fields, "commands": commands,
            "interval": int(interval) if interval else None,
            "description": form.get("description") or None}


@ui.route("/profiles/", methods=("GET", "POST"))
@require("read")
def index():
    """The profiles, and the form that creates, edits and tries one (phone-sized)."""
    db = web_db.get_db()
    form = {"name": "", "codec": "js", "source": "", "fields": "[]", "commands": "[]",
            "interval": "", "description": "", "payload": "", "node_id": ""}
    tried = None
    edit = request.args.get("edit")
    if edit and request.method == "GET":
        try:
            p = profile_store.get_profile(db, edit)
        except StoreError as e:
            flash(str(e))
        else:
            form.update({k: p[k] or "" for k in ("name", "codec", "source", "description")},
                        fields=json.dumps(p["fields"], indent=1),
                        commands=json.dumps(p["commands"]), interval=p["interval"] or "")
    if request.method == "POST":
        if not _can_provision():
            flash("Changing profiles needs the technician role.")
            return redirect(url_for("profiles.index"))
        form.update({k: request.form.get(k, "") for k in form})
        try:
            p = _form_profile(request.form)
            if request.form.get("action") == "try":
                payloads = [x for x in form["payload"].splitlines() if x.strip()][:MAX_PAYLOADS]
                tried = service.try_codec(db, p, payloads, form["node_id"].strip() or None,
                                          _fport(request.form.get("fport")))
            else:
                service.save(db, p, actor=actor())
                flash(f"Profile {p['name']} saved; it applies to frames from now on.")
                return redirect(url_for("profiles.index"))
        except (ProfileError, StoreError) as e:
            flash(f"Not saved: {e}")
    return render_template("profiles/index.html", profiles=profile_store.list_profiles(db),
                           form=form, codecs=[c for c in CODECS if c != POLYLINK],
                           tried=tried)


def _fport(text):
    return int(text) if (text or "").isdigit() and 1 <= int(text) <= 223 else 1


def _can_provision() -> bool:
    return allowed(current_role(), "provisioning")



@ui.route("/profiles/<name>/remove", methods=("POST",))
@require("provisioning")
def remove(name):
    try:
        if name == POLYLINK:
            raise ProfileError("the built-in profile 'polylink' cannot be removed")
        profile_store.delete_profile(web_db.get_db(), name, actor=actor())
        flash(f"Profile {name} removed.")
    except (ProfileError, StoreError) as e:
        flash(str(e))
    return redirect(url_for("profiles.index"))


@ui.route("/devices/add", methods=("GET", "POST"))
@require("provisioning")
def add_devices():
    """Register devices: scan (or type) a DevEUI / TR005 QR code, or upload a CSV."""
    db = web_db.get_db()
    results = None
    form = {"code": "", "name": "", "profile": "", "lat": "", "lon": ""}
    if request.method == "POST":
        form.update({k: request.form.get(k, "").strip() for k in form})
        try:
            upload = request.files.get("csv")
            if upload and upload.filename:
                data = upload.read(MAX_CSV + 1)
                if len(data) > MAX_CSV:
                    raise devices.DeviceError(f"CSV larger than {MAX_CSV >> 20} MB")
                results = devices.import_csv(db, data.decode("utf-8", "replace"), actor())
                ok = sum(1 for r in results if r["ok"])
                flash(f"{ok} of {len(results)} devices registered.")
            else:
                node = devices.register(db, form["code"], form["profile"], form["name"],
                                        form["lat"], form["lon"], actor=actor())
                flash(f"Device {node} registered.")
                return redirect(url_for("profiles.add_devices"))
        except devices.DeviceError as e:
            flash(f"Not registered: {e}")
    profiles = [p for p in profile_store.list_profiles(db) if p["name"] != POLYLINK]
    return render_template("profiles/devices.html", profiles=profiles, form=form,
                           results=results)


def init_app(app):
    app.register_blueprint(ui)
    csrf.exempt(ingest_bp)
    app.register_blueprint(ingest_bp)
