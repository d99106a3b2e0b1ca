"""Web UI for OTA: releases (list, upload), rollouts (create, watch, pause/resume/abort/retry)."""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from fleet.ota import releases as ota
from fleet.ota import rollouts
from fleet.store import audit as audit_store
from fleet.store import ota as ota_store
from fleet.store.base import DuplicateName, UnknownRelease, UnknownRollout
from fleet.web import db as web_db
from fleet.web.auth import require

bp = Blueprint("ota", __name__, url_prefix="/updates")


@bp.get("/")
@require("read")
def index():
    return _index()


def _index(form=None):
    db = web_db.get_db()
    rolls = [rollouts.summary(db, r["id"]) for r in ota_store.list_rollouts(db)]
    return render_template("ota/index.html", releases=ota_store.list_releases(db), rollouts=rolls,
                           keys=ota.list_keys(current_app.config["SETTINGS"], db),
                           boards=ota.known_boards(), form=form or {})


@bp.post("/releases")
@require("releases")
def upload():
    f = request.files.get("bundle")
    if f is None or not f.filename:
        flash("Not uploaded: choose a release bundle (.tar from `make release`).")
        return redirect(url_for("ota.index"))
    try:
        m = ota.upload(web_db.get_db(), current_app.config["SETTINGS"], f.read(),
                       actor=g.user["name"])
    except (ota.ReleaseError, DuplicateName) as e:
        flash(f"Release refused: {e}")
    else:
        flash(f"Release {m['version']} stored ({len(m['files'])} files, key {m['key']}).")
    return redirect(url_for("ota.index"))


@bp.post("/rollouts")
@require("releases")
def create():
    form = {k: request.form.get(k, "").strip() for k in
            ("release", "tags", "board", "provider", "version", "micropython", "nodes",
             "stages", "max_failures")}
    target = {}
    if form["tags"]:
        target["tags"] = [t.strip() for t in form["tags"].split(",") if t.strip()]
    if form["nodes"]:
        target["nodes"] = [t.strip() for t in form["nodes"].replace(",", " ").split()]
    for k in ("board", "provider", "version", "micropython"):
        if form[k]:
            target[k] = form[k]
    try:
        stages = []
        for part in (form["stages"] or "1:3600,10:3600,50:3600,100:0").split(","):
            pct, _, soak = part.partition(":")
            stages.append({"percent": int(pct), "soak": int(soak or 0)})
        maxf = float(form["max_failures"] or 0.2)
    except ValueError:
        flash("Not started: stages are PERCENT:SOAK_SECONDS,... and max failures a fraction.")
        return _index(form), 400
    try:
        rid = rollouts.create(web_db.get_db(), form["release"], target, stages, maxf,
                              actor=g.user["name"])
    except (rollouts.RolloutError, UnknownRelease) as e:
        flash(f"Not started: {e}")
        return _index(form), 400
    flash(f"Rollout {rid} started.")
    return redirect(url_for("ota.rollout", rid=rid))


@bp.get("/rollouts/<int:rid>")
@require("read")
def rollout(rid):
    db = web_db.get_db()
    r = web_db.or_404(UnknownRollout, rollouts.summary, db, rid)
    return render_template("ota/rollout.html", r=r,
                           nodes=ota_store.rollout_nodes(db, rid, limit=2000),
                           audit=audit_store.audit_log(db, limit=50, target=f"rollout:{rid}"))


@bp.post("/rollouts/<int:rid>/<action>")
@require("releases")
def act(rid, action):
    try:
        r = rollouts.act(web_db.get_db(), rid, action, actor=g.user["name"])
    except UnknownRollout:
        abort(404)
    except rollouts.RolloutError as e:
        flash(f"Not done: {e}")
    else:
        flash(f"Rollout {rid}: {action} done, now {r['state']}.")
    return redirect(url_for("ota.rollout", rid=rid))
