"""Web UI for nodes: the searchable list with bulk actions, and the node page with live values.

The node page's live values come from a server-sent event stream (`/nodes/<id>/live`, the
loop in fleet/nodes/sse.py).
"""

import json
import math
import threading
import time
import unicodedata

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from polylink import codes

from fleet.nodes import charts, display, export, sse
from fleet.nodes import commands as downlink
from fleet.ota import rollouts
from fleet.store import alerts as alert_store
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store import profiles as profile_store
from fleet.store import providers as provider_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import BadFilter, StoreError, UnknownNode
from fleet.web import auth
from fleet.web import db as web_db
from fleet.web.params import MAX_INT, query_int

bp = Blueprint("nodes", __name__, url_prefix="/nodes")

PAGE_SIZE = 50
MAX_PAGE = MAX_INT // PAGE_SIZE  # the row offset must fit the store's integers
BULK_COMMAND_MAX = 100  # one broker connection per command: keep a click under a few seconds
TAG_MAX, NAME_MAX, LOCATION_MAX = 32, 64, 120
FILTER_KEYS = ("q", "status", "provider", "board", "firmware", "micropython", "battery", "seen",
               "tag")
RESET_CAUSES = {codes.PWRON_RESET: "power on", codes.HARD_RESET: "hard reset",
                codes.WDT_RESET: "watchdog", codes.DEEPSLEEP_RESET: "deep sleep",
                codes.SOFT_RESET: "soft reset"}
STATUS_CHARTS = (("rssi", "RSSI", "dBm"), ("heap_free", "Free heap", "B"), ("queue", "Queue", ""))
# From the LoRaWAN providers' radio metadata (every gateway that heard an uplink).
RADIO_CHARTS = (("lora_rssi", "LoRa RSSI, all gateways", "dBm"),
                ("lora_snr", "LoRa SNR, all gateways", "dB"))


@bp.app_template_filter("reading")
def reading_filter(value, senml_unit, decimals=None):
    """A node's own measure with its unit from the one table: {{ n.battery|reading('V', 2) }}."""
    return display.measure("", senml_unit, decimals).text(value)


def _filters() -> dict:
    return {k: request.values.get(k, "").strip() for k in FILTER_KEYS}


def _clean_text(raw: str, what: str, limit: int) -> str:
    """Strip; refuse control characters and overlong text (tags, names, locations)."""
    text = raw.strip()
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text)} characters; at most {limit}")
    if any(unicodedata.category(c)[0] == "C" for c in text):
        raise ValueError(f"{what} contains control characters")
    return text


def _tag(raw: str) -> str:
    tag = _clean_text(raw, "tag", TAG_MAX)
    if not tag or "," in tag:
        raise ValueError("a tag is 1-32 characters without commas")
    return tag


# --- the list ------------------------------------------------------------------------------------


@bp.route("/")
@auth.require("read")
def index():
    db = web_db.get_db()
    f = _filters()
    sort = request.args.get("sort", "id")
    desc = request.args.get("dir") == "desc"
    page = query_int("page", 1, lo=1, hi=MAX_PAGE)
    try:
        rows, total = node_store.query_nodes(db, f, sort, desc, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    except BadFilter as e:
        return render_template("error.html", message=f"Bad filter: {e}"), 400
    pages = max(1, math.ceil(total / PAGE_SIZE))
    active = {k: v for k, v in f.items() if v}
    return render_template(
        "nodes/index.html", nodes=rows, total=total, page=page, pages=pages, f=f,
        active=active, sort=sort, desc=desc, facets=node_store.facets(db),
        sorts=node_store.NODE_SORTS,
        command_names=list(downlink.COMMANDS), bulk_max=BULK_COMMAND_MAX,
        **_rollout_choices(db))


@bp.route("/_export")  # "_" is never in a node id, so no node's page is shadowed
@auth.require("read")
def export_readings():
    """The node list's download: readings of the nodes its filters match (a GET that changes
    nothing, so no CSRF token), streamed like the API's."""
    db = web_db.get_db()
    try:
        since = export.parse_time("since", request.args.get("since"))
        until = export.parse_time("until", request.args.get("until"), end_of_day=True)
        ids = node_store.matching_node_ids(db, _filters())
    except (export.ExportError, BadFilter) as e:
        return render_template("error.html", message=f"No export: {e}"), 400
    fmt = request.args.get("format") or "csv"
    if fmt not in export.FORMATS:
        return render_template("error.html", message=f"No export: format {fmt!r} must be "
                               f"one of {', '.join(export.FORMATS)}"), 400
    if since is not None and until is not None and since > until:
        return render_template("error.html", message="No export: since is after until"), 400
    response = current_app.response_class(
        export.stream_from(current_app.config["DATABASE"], web_db.request_scope(), sorted(ids),
                           since, until, fmt),
        content_type=export.FORMATS[fmt])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{export.filename(fmt, since, until)}"')
    return response


def _rollout_choices(db) -> dict:
    """Releases to roll out, each with the unfinished rollouts of it nodes can join."""
    if not auth.allowed(auth.current_role(), "releases"):
        return {"releases": [], "open_rollouts": {}}
    joinable: dict[str, list] = {}
    for r in ota_store.open_rollouts(db):
        joinable.setdefault(r["release"], []).append(r)
    return {"releases": [r["version"] for r in ota_store.list_releases(db)],
            "open_rollouts": joinable}


@bp.route("/bulk", methods=("POST",))
@auth.require("bulk")
def bulk():
    db = web_db.get_db()
    f = _filters()
    back = url_for("nodes.index", **{k: v for k, v in f.items() if v})
    action = request.form.get("action", "")
    if request.form.get("scope") == "matching":
        ids = node_store.matching_node_ids(db, f)
    else:
        ids = request.form.getlist("ids")
    if not ids:
        flash("No nodes selected.")
        return redirect(back, 303)
    if action in ("tag", "untag"):
        try:
            tag = _tag(request.form.get("bulk_tag", ""))
        except ValueError as e:
            flash(f"Not tagged: {e}")
            return redirect(back, 303)
        n = node_store.tag_nodes(db, ids, tag, remove=action == "untag", actor=auth.actor())
        flash(f"Tag {tag!r} {'removed from' if action == 'untag' else 'added to'} {n} of "
              f"{len(ids)} nodes.")
    elif action == "command":
        if len(ids) > BULK_COMMAND_MAX:
            flash(f"Not sent: {len(ids)} nodes; a bulk command goes to at most "
                  f"{BULK_COMMAND_MAX} (use a rollout or narrow the filter).")
            return redirect(back, 303)
        command, raw_arg = request.form.get("command", ""), request.form.get("arg", "").strip()
        try:
            arg = downlink.check_command(command, int(raw_arg) if raw_arg else None)
        except downlink.BadCommand as e:
            flash(f"Not sent: {e}")
            return redirect(back, 303)
        except ValueError:
            flash(f"Not sent: argument {raw_arg!r} is not a whole number.")
            return redirect(back, 303)
        sent, failed = 0, []
        for node_id in ids:
            try:
                downlink.send_command(db, current_app.config["SETTINGS"], node_id, command, arg,
                                      created_by=auth.actor())
                sent += 1
            except (downlink.DownlinkError, UnknownNode) as e:
                failed.append(f"{node_id}: {e}")
        flash(f"Command {command} sent to {sent} of {len(ids)} nodes."
              + (f" Failed: {'; '.join(failed[:3])}" if failed else ""))
    elif action == "rollout":
        # rollout_to is "new:VERSION" (a new rollout of exactly these nodes; fleet/ota/rollouts.py
        # checks boards and that no node is in another unfinished rollout) or "rollout:ID" (add
        # them to that unfinished rollout; those already in it or on its release are skipped).
        if not auth.allowed(auth.current_role(), "releases"):
            raise auth.Forbidden("starting a rollout needs the releases area")
        choice = request.form.get("rollout_to", "")
        if choice.startswith("rollout:"):
            return _join_rollout(db, choice[len("rollout:"):], ids, back)
        version = choice[len("new:"):] if choice.startswith("new:") else request.form.get(
            "release", "")
        try:
            rid = rollouts.create(db, version, {"nodes": ids}, actor=auth.actor())
        except (rollouts.RolloutError, StoreError) as e:
            flash(f"No rollout started: {e}")
            return redirect(back, 303)
        flash(f"Rollout {rid} of {version} started for {len(ids)} nodes.")
        return redirect(url_for("ota.rollout", rid=rid), 303)
    else:
        flash(f"Unknown bulk action {action!r}.")
    return redirect(back, 303)


def _join_rollout(db, raw_rid: str, ids: list, back: str):
    if not raw_rid.isdigit():
        flash(f"No nodes added: {raw_rid!r} is not a rollout id.")
        return redirect(back, 303)
    rid = int(raw_rid)
    try:
        done = rollouts.add_nodes(db, rid, ids, actor=auth.actor())
    except (rollouts.RolloutError, StoreError) as e:
        flash(f"No nodes added: {e}")
        return redirect(back, 303)
    version = ota_store.get_rollout(db, rid)["release"]
    skipped = rollouts.skipped_text(done["skipped"], version)
    flash(f"{done['added']} of {len(ids)} nodes added to rollout {rid} of {version}."
          + (f" Skipped: {skipped}." if skipped else ""))
    return redirect(url_for("ota.rollout", rid=rid), 303)


# --- one node ------------------------------------------------------------------------------------


def _node_or_404(db, node_id) -> dict:
    return web_db.or_404(UnknownNode, node_store.get_node, db, node_id)


def _latest(db, node_id) -> list[dict]:
    out = []
    for row in telemetry_store.latest_values(db, node_id):
        shown = display.quantity(row["qid"], row["inst"])
        out.append({"key": f"q{row['qid']}-{row['inst']}", "qid": row["qid"], "inst": row["inst"],
                    "name": shown.label, "text": shown.text(row["value"]), "t": row["t"]})
    return out


def _command_result(c: dict) -> str:
    if c["result_at"] is not None:
        text = "ok" if c["result_code"] == 0 else f"error {c['result_code']}"
        if c["result_value"] not in (None, 0):
            text += f" ({c['result_value']})"
        return text + (f": {c['result_text']}" if c["result_text"] else "")
    return "waiting" if c["sent_at"] else "not sent"


@bp.app_template_filter("command_result")
def command_result_filter(c):
    return _command_result(c)


@bp.app_template_filter("config_text")
def config_text(body):
    """{"interval": 60, "status_interval": 300} as 'interval 60 s, status interval 300 s'."""
    return ", ".join(f"{k.replace('_', ' ')} {v} {downlink.CONFIG_FIELDS.get(k, (0, 0, ''))[2]}"
                     .strip() for k, v in (body or {}).items())


@bp.app_template_filter("reset_cause")
def reset_cause_filter(code):
    return "-" if code is None else RESET_CAUSES.get(code, str(code))


@bp.route("/<node_id>")
@auth.require("read")
def detail(node_id):
    db = web_db.get_db()
    node = _node_or_404(db, node_id)
    rng = request.args.get("range", charts.DEFAULT_RANGE)
    if rng not in charts.RANGES:
        rng = charts.DEFAULT_RANGE
    now = time.time()
    return render_template(
        "nodes/detail.html",
        node=node,
        status=node_store.node_status(db, node_id),
        place=node_store.node_place(db, node_id),
        latest=_latest(db, node_id),
        rng=rng,
        ranges=list(charts.RANGES),
        status_charts=(RADIO_CHARTS if provider_store.has_receptions(db, node_id) else ())
        + STATUS_CHARTS,
        alerts=alert_store.list_alerts(db, node_id=node_id, limit=20),
        commands=command_store.list_commands(db, node_id),
        history=telemetry_store.status_history(db, node_id, now - 7 * 86400, limit=10),
        events=telemetry_store.events(db, node_id, limit=10),
        updates=ota_store.node_updates(db, node_id),
        ota_states=rollouts.REPORT_STATES, ota_reasons=rollouts.REASONS,
        bad=telemetry_store.bad_frames(db, node_id, limit=5),
        command_names=list(downlink.COMMANDS),
        config_fields=downlink.CONFIG_FIELDS,
        last_config=command_store.last_config(db, node_id),
        profile_commands=_profile_commands(db, node),
        live_ms=sse.LIVE_RETRY_MS,
    )


def _profile_commands(db, node) -> list[dict]:
    """The downlink commands of a non-Polylink node's profile, each with its default data as
    JSON (what the form sends when the technician leaves the data field empty)."""
    if node["profile"] == "polylink":
        return []
    try:
        commands = profile_store.get_profile(db, node["profile"])["commands"]
    except StoreError:
        return []
    return [{"name": c["name"], "data": json.dumps(c.get("data") or {})} for c in commands]


@bp.route("/<node_id>/chart.svg")
@auth.require("read")
def chart_svg(node_id):
    """One chart as an SVG image: ?q=QID&i=INST for a quantity or ?s=COLUMN for status."""
    db = web_db.get_db()
    _node_or_404(db, node_id)
    rng = request.args.get("range", charts.DEFAULT_RANGE)
    if rng not in charts.RANGES:
        abort(400, f"range must be one of {', '.join(charts.RANGES)}")
    until = time.time()
    since = until - charts.RANGES[rng]
    column = request.args.get("s")
    if column:
        labels = {c: (n, u) for c, n, u in STATUS_CHARTS + RADIO_CHARTS}
        if column not in labels:
            abort(400, f"s must be one of {', '.join(labels)}")
        shown = display.measure(*labels[column])
        if column.startswith("lora_"):
            rows = provider_store.reception_buckets(db, node_id, column[5:], since, until,
                                                    charts.BUCKETS)
        else:
            rows = telemetry_store.status_buckets(db, node_id, column, since, until, charts.BUCKETS)
    else:
        qid = query_int("q")
        inst = query_int("i", 0)
        if qid is None:
            abort(400, "q (quantity id) or s (status column) is required")
        shown = display.quantity(qid, inst)
        rows = telemetry_store.reading_buckets(db, node_id, qid, inst, since, until, charts.BUCKETS)
    svg = render_template("nodes/chart.svg", c=charts.geometry(rows, since, until, shown.factor),
                          title=shown.title(), rng=rng, width=charts.W, font=charts.FONT)
    response = Response(svg, mimetype="image/svg+xml")
    # Fresh enough for a person looking at it; lets a phone on a slow link reuse it briefly.
    response.headers["Cache-Control"] = "private, max-age=30"
    return response


@bp.route("/<node_id>/commands", methods=("POST",))
@auth.require("nodes")
def send_command(node_id):
    db = web_db.get_db()
    command = request.form.get("command", "")
    raw_arg = request.form.get("arg", "").strip()
    arg = None
    if raw_arg:
        try:
            arg = int(raw_arg)
        except ValueError:
            flash(f"Argument {raw_arg!r} is not a whole number.")
            return redirect(url_for("nodes.detail", node_id=node_id) + "#commands", 303)
    try:
        cid = downlink.send_command(db, current_app.config["SETTINGS"], node_id, command, arg,
                                    created_by=auth.actor())
    except UnknownNode:
        abort(404)
    except downlink.DownlinkError as e:
        flash(f"Command not sent: {e}")
    else:
        flash(f"Command {command} sent (id {cid}).")
    return redirect(url_for("nodes.detail", node_id=node_id) + "#commands", 303)


@bp.route("/<node_id>/profile-commands", methods=("POST",))
@auth.require("nodes")
def send_profile_command(node_id):
    """One of the node's profile commands, encoded by its codec and queued with the LoRaWAN
    provider it was last heard on; data (a JSON object) overrides the command's defaults."""
    db = web_db.get_db()
    _node_or_404(db, node_id)
    back = url_for("nodes.detail", node_id=node_id) + "#profile-commands"
    name = request.form.get("command", "")
    raw = request.form.get("data", "").strip()
    try:
        data = json.loads(raw) if raw else None
    except ValueError as e:
        flash(f"Command not sent: data is not JSON ({e}); give an object like"
              ' {"interval": 600}')
        return redirect(back, 303)
    try:
        sent = downlink.send_profile_command(db, current_app.config["SETTINGS"], node_id, name,
                                             data, actor=auth.actor())
    except downlink.DownlinkError as e:
        flash(f"Command not sent: {e}")
    else:
        flash(f"Command {sent['command']} queued: {len(sent['payload']) // 2} bytes on fPort"
              f" {sent['fport']} ({sent['payload'].upper() or 'empty'}); the device gets it after"
              " its next uplink.")
    return redirect(back, 303)


def _config_value(name: str):
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} {raw!r} is not a whole number of seconds") from None


@bp.route("/<node_id>/config", methods=("POST",))
@auth.require("nodes")
def send_config(node_id):
    db = web_db.get_db()
    _node_or_404(db, node_id)
    back = url_for("nodes.detail", node_id=node_id) + "#config"
    try:
        # The node's own rules for CONFIG (firmware/polylink/commands.py), before anything is sent.
        fields = downlink.check_config({name: _config_value(name)
                                        for name in downlink.CONFIG_FIELDS})
    except ValueError as e:  # BadCommand too
        flash(f"Config not sent: {e}")
        return redirect(back, 303)
    try:
        cid = downlink.send_config(db, current_app.config["SETTINGS"], node_id,
                                   created_by=auth.actor(), **fields)
    except downlink.DownlinkError as e:
        flash(f"Config not sent: {e}")
    else:
        flash(f"Config sent (id {cid}); the node confirms it in Commands.")
    return redirect(back, 303)


@bp.route("/<node_id>/edit", methods=("POST",))
@auth.require("nodes")
def edit(node_id):
    db = web_db.get_db()
    _node_or_404(db, node_id)
    try:
        name = _clean_text(request.form.get("name", ""), "name", NAME_MAX) or None
        tags = []
        for raw in request.form.get("tags", "").split(","):
            if raw.strip():
                tag = _tag(raw)
                if tag not in tags:
                    tags.append(tag)
    except ValueError as e:
        flash(f"Not saved: {e}")
    else:
        node_store.set_name_and_tags(db, node_id, name, tags, actor=auth.actor())
        flash("Name and tags saved.")
    return redirect(url_for("nodes.detail", node_id=node_id) + "#edit", 303)


def _coordinate(name: str, limit: float):
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} {raw!r} is not a number") from None
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise ValueError(f"{name} must be within -{limit:g}..{limit:g} degrees")
    return value


@bp.route("/<node_id>/place", methods=("POST",))
@auth.require("nodes")
def place(node_id):
    db = web_db.get_db()
    _node_or_404(db, node_id)
    try:
        lat, lon = _coordinate("lat", 90), _coordinate("lon", 180)
        if (lat is None) != (lon is None):
            raise ValueError("give both latitude and longitude, or neither")
        location = _clean_text(request.form.get("location", ""), "location", LOCATION_MAX)
    except ValueError as e:
        flash(f"Position not saved: {e}")
    else:
        node_store.set_place(db, node_id, lat, lon, location or None, actor=auth.actor())
        flash("Position saved.")
    return redirect(url_for("nodes.detail", node_id=node_id) + "#place", 303)


# --- live values ---------------------------------------------------------------------------------


def live_payload(db, node_id) -> dict:
    """Everything the node page updates in place, already formatted."""
    state = telemetry_store.live_state(db, node_id)
    node = state["node"]
    values = {}
    for row in state["latest"]:
        values[f"q{row['qid']}-{row['inst']}"] = display.quantity(row["qid"], row["inst"]).text(
            row["value"])
    return {
        "status": node_store.node_status(db, node_id),
        # A time, not "5 s ago": the stream sends only when something changed.
        "last_seen": node["last_seen"],
        "facts": {
            "battery": reading_filter(node["battery"], "V", 2),
            "rssi": reading_filter(node["rssi"], "dBm"),
            "uptime": reading_filter(node["uptime"], "s"),
            "firmware": node["firmware_version"] or "-",
            "micropython": node["micropython_version"] or "-",
        },
        "values": values,
        "commands": {str(c["id"]): _command_result(c) for c in state["commands"]},
    }


@bp.route("/<node_id>/live")
@auth.require("read")
def live(node_id):
    db = web_db.get_db()
    _node_or_404(db, node_id)
    session_holds = auth.session_check()

    def payload(conn, node_id):
        if not session_holds(conn):  # logged out meanwhile: the page says to reload
            raise UnknownNode(node_id)
        return live_payload(conn, node_id)

    # The stream's own connection outlives the request: it reads with the request's scope, and
    # checks on every read that the login it was opened with still holds.
    stream = sse.stream(current_app.config["DATABASE"], web_db.request_scope(), node_id,
                        payload, current_app.extensions["polylink_live_slots"],
                        current_app.config.get("LIVE_SECONDS", sse.LIVE_SECONDS),
                        current_app.config.get("LIVE_IDLE", sse.LIVE_IDLE))
    response = Response(stream, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def init_app(app):
    app.extensions["polylink_live_slots"] = threading.BoundedSemaphore(
        app.config.get("LIVE_STREAMS", sse.LIVE_STREAMS))
    app.register_blueprint(bp)
