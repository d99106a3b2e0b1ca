"""Web UI: the fleet list and one page per node with latest values, a chart and commands."""

import time

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

from . import db as store
from . import downlink
from .api import iso
from .auth import require
from .senml import name_and_unit

bp = Blueprint("nodes", __name__, url_prefix="/nodes")

CHART_W, CHART_H, CHART_PAD = 600, 160, 24
CHART_HOURS = 24
CHART_POINTS = 2000


def chart(points: list[tuple[float, float]]) -> dict | None:
    """SVG geometry (polyline points and axis labels) for (t, value) points, oldest first."""
    if len(points) < 2:
        return None
    t0, t1 = points[0][0], points[-1][0]
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    span_t = (t1 - t0) or 1.0
    w, h, pad = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD, CHART_PAD
    coords = " ".join(
        f"{pad + (t - t0) / span_t * w:.1f},{pad + (hi - v) / (hi - lo) * h:.1f}"
        for t, v in points
    )
    return {
        "points": coords,
        "width": CHART_W,
        "height": CHART_H,
        "pad": pad,
        "lo": f"{lo:g}",
        "hi": f"{hi:g}",
        "start": time.strftime("%H:%M", time.gmtime(t0)),
        "end": time.strftime("%H:%M", time.gmtime(t1)),
    }


def ago(t) -> str:
    """A short human 'time since' for the fleet list."""
    if t is None:
        return "never"
    s = max(0, int(time.time() - t))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


@bp.app_template_filter("iso")
def iso_filter(t):
    return iso(t) or "-"


@bp.app_template_filter("ago")
def ago_filter(t):
    return ago(t)


@bp.route("/")
@require("read")
def index():
    nodes = store.list_nodes(store.get_db())
    online = sum(1 for n in nodes if n["online"])
    return render_template("nodes/index.html", nodes=nodes, online=online)


@bp.route("/<node_id>")
@require("read")
def detail(node_id):
    db = store.get_db()
    try:
        node = store.get_node(db, node_id)
    except store.UnknownNode:
        abort(404)
    latest = []
    charts = []
    since = time.time() - CHART_HOURS * 3600
    for row in store.latest_values(db, node_id):
        name, unit = name_and_unit(row["qid"], row["inst"])
        latest.append({"name": name, "unit": unit or "", "value": row["value"], "t": row["t"]})
        points = [(t, v) for t, _q, inst, v in
                  store.readings(db, node_id, since=since, qids=[row["qid"]], limit=CHART_POINTS)
                  if inst == row["inst"]]
        c = chart(points)
        if c:
            c["name"], c["unit"] = name, unit or ""
            charts.append(c)
    return render_template(
        "nodes/detail.html",
        node=node,
        latest=latest,
        charts=charts,
        commands=store.list_commands(db, node_id),
        events=store.events(db, node_id, limit=10),
        bad=store.bad_frames(db, node_id, limit=10),
        command_names=list(downlink.COMMANDS),
    )


@bp.route("/<node_id>/commands", methods=("POST",))
@require("nodes")
def send_command(node_id):
    db = store.get_db()
    command = request.form.get("command", "")
    raw_arg = request.form.get("arg", "").strip()
    arg = None
    if raw_arg:
        try:
            arg = int(raw_arg)
        except ValueError:
            flash(f"Argument {raw_arg!r} is not a whole number.")
            return redirect(url_for("nodes.detail", node_id=node_id))
    try:
        cid = downlink.send_command(db, current_app.config["SETTINGS"], node_id, command, arg,
                                    created_by=g.user["name"])
    except store.UnknownNode:
        abort(404)
    except downlink.DownlinkError as e:
        flash(f"Command not sent: {e}")
    else:
        flash(f"Command {command} sent (id {cid}).")
    return redirect(url_for("nodes.detail", node_id=node_id))
