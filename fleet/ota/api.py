"""OTA over HTTP: the API for releases and rollouts (/api/v1), and the files nodes fetch (/ota/v1).

Nodes authenticate to /ota/v1 with their file login (HTTP Basic: node id and a credential derived
from the MQTT password, polylink/ota/credential.py, which the broker does not accept), so only
registered, unrevoked nodes can download; the files are signed and content-addressed, so the login
guards access, not integrity. A URL carries no credential: a stolen one is useless without the
node's login, and a node may read only its own offer and only the files of releases a rollout
offers it, so a file URL seen elsewhere gets another node nothing.
"""

import functools

from flask import Blueprint, abort, current_app, g, jsonify, request, send_file

from fleet.broker.auth import verify_password
from fleet.ota import releases as ota
from fleet.ota import rollouts
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store.base import DuplicateName, UnknownNode, UnknownRelease, UnknownRollout
from fleet.web import db as web_db
from fleet.web import scoping
from fleet.web.api import ApiError, iso, json_body, or_404
from fleet.web.auth import csrf, require

bp = Blueprint("ota", __name__)
files_bp = Blueprint("ota_files", __name__, url_prefix="/ota/v1")
MAX_BUNDLE = 8 * 1024 * 1024


def release_json(r: dict) -> dict:
    return {"version": r["version"], "key_id": r["key_id"], "boards": r["boards"],
            "micropython": r["micropython"], "runtime_micropython": r["runtime_micropython"],
            "files": r["files"], "size": r["size"],
            "manifest_sha256": r["manifest_sha"], "created": iso(r["created"]),
            "created_by": r["created_by"]}


def rollout_json(r: dict) -> dict:
    return {"id": r["id"], "release": r["release"], "state": r["state"], "reason": r["reason"],
            "stage": r["stage"], "stages": r["stages"], "target": r["target"],
            "max_failures": r["max_failures"], "max_health_drop": r["max_health_drop"],
            "stage_started": iso(r["stage_started"]), "created": iso(r["created"]),
            "created_by": r["created_by"], "updated": iso(r["updated"]),
            **({"stage_counts": r["stage_counts"], "totals": r["totals"],
                "skipped": r["skipped"]} if "totals" in r else {})}


@bp.get("/releases")
@require("read")
def list_releases():
    releases = ota_store.list_releases(web_db.get_db())
    return jsonify({"releases": [release_json(r) for r in releases]})


@bp.get("/releases/<version>")
@require("read")
def get_release(version):
    return jsonify(release_json(or_404(UnknownRelease, ota_store.get_release, web_db.get_db(),
                                       version)))


@bp.post("/releases")
@require("releases")
def upload_release():
    if request.content_length and request.content_length > MAX_BUNDLE:
        raise ApiError(413, f"bundle larger than {MAX_BUNDLE} bytes")
    data = request.get_data(cache=False)
    if not data:
        raise ApiError(400, "send the release bundle (.tar from `fleet release build`) as the "
                            "request body (Content-Type: application/x-tar)")
    try:
        m = ota.upload(web_db.get_db(), current_app.config["SETTINGS"], data,
                       actor=f"token:{g.token_name}")
    except ota.ReleaseError as e:
        raise ApiError(400, str(e)) from None
    except DuplicateName as e:
        raise ApiError(409, str(e)) from None
    response = jsonify(release_json(ota_store.get_release(web_db.get_db(), m["version"])))
    response.status_code = 201
    return response


@bp.get("/rollouts")
@require("read")
def list_rollouts():
    db = web_db.get_db()
    return jsonify({"rollouts": [rollout_json(rollouts.summary(db, r["id"]))
                                 for r in ota_store.list_rollouts(db)]})


def _rollout(rid):
    return or_404(UnknownRollout, rollouts.summary, web_db.get_db(), rid)


@bp.get("/rollouts/<int:rid>")
@require("read")
def get_rollout(rid):
    r = rollout_json(_rollout(rid))
    r["nodes"] = [{"node_id": n["node_id"], "stage": n["stage"], "state": n["state"],
                   "from_version": n["from_version"], "firmware_version": n["firmware_version"],
                   "micropython_version": n["micropython_version"],
                   "progress": n["progress"], "reason": n["reason"], "attempts": n["attempts"],
                   "offered_at": iso(n["offered_at"]), "updated": iso(n["updated"])}
                  for n in ota_store.rollout_nodes(web_db.get_db(), rid)]
    return jsonify(r)


@bp.post("/rollouts")
@require("releases")
def create_rollout():
    body = json_body('{"release": "0.2.0", "target": {"tags": ["pilot"]}}',
                     {"release", "target", "stages", "max_failures", "max_health_drop"})
    if not isinstance(body.get("release"), str):
        raise ApiError(400, 'field "release" must be a release version string')
    kw = {k: body[k] for k in ("stages", "max_failures", "max_health_drop") if k in body}
    db = web_db.get_db()
    try:
        rid = rollouts.create(db, body["release"], body.get("target") or {},
                              actor=f"token:{g.token_name}", **kw)
    except UnknownRelease as e:
        raise ApiError(404, str(e)) from None
    except rollouts.RolloutError as e:
        raise ApiError(400, str(e)) from None
    response = jsonify(rollout_json(rollouts.summary(db, rid)))
    response.status_code = 201
    return response


@bp.post("/rollouts/<int:rid>/nodes")
@require("releases")
def add_rollout_nodes(rid):
    """Add nodes to an unfinished rollout; those already in it or on its release are skipped."""
    _rollout(rid)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"nodes"}:
        raise ApiError(400, 'body must be a JSON object like {"nodes": ["node-1", "node-2"]} '
                            "(Content-Type: application/json)")
    try:
        done = rollouts.add_nodes(web_db.get_db(), rid, body["nodes"],
                                  actor=f"token:{g.token_name}")
    except rollouts.RolloutError as e:
        raise ApiError(409 if "only to a running" in str(e) else 400, str(e)) from None
    return jsonify({**done, "rollout": rollout_json(_rollout(rid))})


@bp.post("/rollouts/<int:rid>/<action>")
@require("releases")
def rollout_action(rid, action):
    _rollout(rid)
    try:
        rollouts.act(web_db.get_db(), rid, action, actor=f"token:{g.token_name}")
    except rollouts.RolloutError as e:
        raise ApiError(409 if action in ("pause", "resume", "abort", "retry") else 400,
                       str(e)) from None
    return jsonify(rollout_json(_rollout(rid)))


@bp.get("/nodes/<node_id>/ota")
@require("read")
def node_ota(node_id):
    db = web_db.get_db()
    or_404(UnknownNode, node_store.get_node, db, node_id)
    rows = ota_store.ota_reports(db, node_id=node_id)
    return jsonify({"node_id": node_id,
                    "trusted_keys": identity_store.trusted_key_ids(db, [node_id]).get(node_id),
                    "reports": [
        {"t": iso(r["t"]), "state": rollouts.REPORT_STATES.get(r["state"], r["state"]),
         "version": r["version"], "progress": r["progress"],
         "reason": rollouts.REASONS.get(r["reason"]) if r["reason"] else None,
         "text": r["text"], "rollout": r["rid"]} for r in rows]})


# --- files for nodes ---------------------------------------------------------------------------


def node_login(view):
    """Let a view run only for a registered node presenting its file login (HTTP Basic)."""

    @functools.wraps(view)
    def wrapped(**kwargs):
        a = request.authorization
        login = None
        if a is not None and a.type == "basic" and a.username:
            login = identity_store.node_login_hash(web_db.get_db(), a.username)
        if a is None or login is None or not verify_password(a.password or "", login[1]):
            resp = jsonify({"error": "a registered node's OTA file login is required (HTTP Basic)"})
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Basic realm="polylink-ota"'
            return resp
        g.node_id = login[0]
        scoping.for_node(g.node_id)  # a node sees its own organisation's releases only
        return view(**kwargs)

    wrapped.polylink_area = "device"  # type: ignore[attr-defined]
    return wrapped


def _offered(sha: str) -> None:
    """403 unless a release of a rollout that includes this node names the file: a file URL
    seen elsewhere gets another node nothing it was not offered itself.

    Manifests and signatures stay readable to every registered node: they are signed metadata,
    and a node refusing a replayed offer (an older release) needs them to say why.
    """
    versions = ota_store.node_release_versions(web_db.get_db(), g.node_id)
    settings = current_app.config["SETTINGS"]
    if not any(sha in ota.release_shas(settings, v) for v in versions):
        abort(403)


@files_bp.get("/releases/<version>/<name>")
@node_login
def release_file(version, name):
    try:  # only the node's organisation's releases and the platform's (the node's scope)
        ota_store.get_release(web_db.get_db(), version)
    except UnknownRelease:
        abort(404)
    path = ota.release_file(current_app.config["SETTINGS"], version, name)
    if path is None:
        abort(404)
    return send_file(path, mimetype="application/octet-stream", conditional=True, max_age=0)


@files_bp.get("/files/<sha>")
@node_login
def content_file(sha):
    path = ota.file_path(current_app.config["SETTINGS"], sha)
    if path is None:
        abort(404)
    _offered(sha)
    # conditional=True answers Range requests with 206 and Content-Range: resumed downloads.
    return send_file(path, mimetype="application/octet-stream", conditional=True,
                     max_age=31536000)


@files_bp.get("/nodes/<node_id>/offer")
@node_login
def offer(node_id):
    if g.node_id != node_id:
        abort(403)
    o = ota_store.rollout_offer_for(web_db.get_db(), node_id)
    if o is None:
        return "", 204
    return jsonify(o)


def init_app(app):
    """The files nodes fetch (/ota/v1): node logins, not CSRF (bp goes under /api/v1)."""
    csrf.exempt(files_bp)
    app.register_blueprint(files_bp)
