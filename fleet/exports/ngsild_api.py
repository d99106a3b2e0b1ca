"""The read side of NGSI-LD on the fleet's own data (ETSI GS CIM 009): /ngsi-ld/v1/entities and
/ngsi-ld/v1/temporal/entities/{id}, with the API's bearer tokens (role "read" and up).

What it serves: each node as a `Device` (urn:ngsi-ld:Device:polylink:{node}), and per node and
domain type one entity with the node's latest values (urn:ngsi-ld:WeatherObserved:polylink:
{node}, ...: the terms of ngsild_terms.py); the temporal endpoint gives that entity's history
from the stored readings. The push side sends one entity per observation instead (ngsild.py),
so a broker without a temporal store still keeps every reading. Terms are compacted with the
fleet's context, named in the Link header of every answer.
"""

from datetime import datetime

from flask import Blueprint, jsonify, request
from polylink import quantities
from werkzeug.exceptions import HTTPException

from fleet.store import exports as export_store
from fleet.store import telemetry as telemetry_store
from fleet.web import db as web_db
from fleet.web.api import ApiError, require_token
from fleet.web.auth import csrf, require

from . import adapter, ngsild, ngsild_terms
from .worker import node_of

bp = Blueprint("ngsild", __name__, url_prefix="/ngsi-ld/v1")
bp.before_request(require_token)
csrf.exempt(bp)
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
CONTEXT_PATH = "/static/ngsi-ld-context.jsonld"
MAX_LIMIT = 1000
TYPES = ("Device", "WeatherObserved", "AirQualityObserved")


class NgsiError(Exception):
    """A request the NGSI-LD API refuses: HTTP status, CIM 009 error type, detail."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind = status, kind


def _problem(status: int, kind: str, detail: str):
    r = jsonify({"type": ERRORS + kind, "title": kind, "detail": detail})
    r.status_code = status
    r.mimetype = "application/problem+json"
    return r


@bp.errorhandler(NgsiError)
def _ngsi_error(e):
    return _problem(e.status, e.kind, str(e))


@bp.errorhandler(ApiError)
def _api_error(e):
    r = _problem(e.status, "Unauthorized" if e.status == 401 else "BadRequestData", str(e))
    if e.status == 401:  # RFC 9110 15.5.2: a 401 says how to authenticate
        r.headers["WWW-Authenticate"] = 'Bearer realm="polylink"'
    return r


@bp.errorhandler(HTTPException)
def _http_error(e):
    kind = {403: "Forbidden", 404: "ResourceNotFound"}.get(e.code or 500, "BadRequestData")
    return _problem(e.code or 500, kind, e.description or e.name)


def _linked(payload, count=None):
    r = jsonify(payload)
    r.headers["Link"] = (f'<{request.host_url.rstrip("/")}{CONTEXT_PATH}>; '
                         f'{ngsild.LINK_REL}')
    if count is not None:
        r.headers["NGSILD-Results-Count"] = str(count)
    return r


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise NgsiError(400, "BadRequestData", f"{name} must be a whole number {lo}..{hi}")
    return int(raw)


def _time(name: str) -> float:
    raw = request.args.get(name)
    if not raw:
        raise NgsiError(400, "BadRequestData", f"{name} is required with this timerel")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise NgsiError(400, "BadRequestData", f"{name} is not an ISO 8601 DateTime: {raw!r}") \
            from None


def _terms(model: str) -> dict:
    """{registry qid: Term} of the quantities an entity type carries."""
    return {quantities.lookup(name): t for name, t in ngsild_terms.QUANTITIES.items()
            if t.model == model}


def _entities(db, types) -> list[dict]:
    nodes = {r["id"]: node_of(r) for r in export_store.node_facts(db)}
    out = []
    if "Device" in types:
        battery = _terms("Device")
        levels = {n: (t, v) for n, q, i, t, v in export_store.latest_of(db, battery) if i == 0}
        for node in nodes.values():
            e = {"id": ngsild.device_id(node.id), "type": "Device",
                 "name": ngsild.prop(node.name or node.id), "category": ngsild.prop(["sensor"]),
                 "deviceState": ngsild.prop("online" if node.online else "offline")}
            if node.last_seen:
                e["dateLastValueReported"] = ngsild.date_value(node.last_seen)
            if node.firmware:
                e["firmwareVersion"] = ngsild.prop(node.firmware)
            if node.id in levels:
                (term,) = battery.values()
                t, v = levels[node.id]
                e["batteryLevel"] = ngsild.prop(round(v * term.factor, 4), term.unit_code,
                                                adapter.iso(t))
            if ngsild.place(node):
                e["location"] = ngsild.place(node)
            out.append(e)
    for model in (m for m in types if m != "Device"):
        terms = _terms(model)
        by_node: dict[str, dict] = {}
        for node_id, qid, inst, t, value in export_store.latest_of(db, terms):
            if inst != 0 or node_id not in nodes:
                continue
            term = terms[qid]
            e = by_node.setdefault(node_id, {
                "id": f"urn:ngsi-ld:{model}:polylink:{node_id}", "type": model,
                "refDevice": {"type": "Relationship", "object": ngsild.device_id(node_id)},
                "_t": t})
            e[term.attribute] = ngsild.prop(round(value * term.factor, 6), term.unit_code,
                                            adapter.iso(t))
            e["_t"] = max(e["_t"], t)
        for node_id, e in by_node.items():
            e["dateObserved"] = ngsild.date_value(e.pop("_t"))
            if ngsild.place(nodes[node_id]):
                e["location"] = ngsild.place(nodes[node_id])
            out.append(e)
    return out


_OPS = ("==", "!=", ">=", "<=", ">", "<")


def _query(q: str):
    """A CIM 009 q of terms joined by ';' (AND): attr op value, value a number or "text"."""
    terms = []
    for part in q.split(";"):
        for op in _OPS:
            if op in part:
                attr, raw = part.split(op, 1)
                break
        else:
            raise NgsiError(400, "InvalidRequest", f"q term {part!r} has no operator"
                            f" ({' '.join(_OPS)})")
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            value = raw[1:-1]
        else:
            try:
                value = float(raw)
            except ValueError:
                raise NgsiError(400, "InvalidRequest",
                                f"q value {raw!r} is neither a number nor \"text\"") from None
        terms.append((attr.strip(), op, value))
    return terms


def _matches(entity: dict, terms) -> bool:
    for attr, op, want in terms:
        a = entity.get(attr)
        if not isinstance(a, dict) or "value" not in a:
            return False
        have = a["value"]
        if isinstance(want, float) != isinstance(have, (int, float)) or isinstance(have, bool):
            return False
        ok = {"==": have == want, "!=": have != want, ">=": have >= want,
              "<=": have <= want, ">": have > want, "<": have < want}[op]
        if not ok:
            return False
    return True


def _check_uri(entity_id: str) -> None:
    """CIM 009: an entity id that is not a URI is BadRequestData, not a missing entity."""
    scheme = entity_id.split(":", 1)[0]
    if ":" not in entity_id or not scheme[:1].isalpha() or not all(
            c.isalnum() or c in "+-." for c in scheme):
        raise NgsiError(400, "BadRequestData", f"entity id {entity_id!r} is not a URI")


def _pick(entity: dict, attrs) -> dict:
    if not attrs:
        return entity
    return {k: v for k, v in entity.items() if k in ("id", "type") or k in attrs}


@bp.get("/entities")
@require("read")
def entities():
    """Query entities: type, id (comma-separated), q, attrs, limit, offset, count."""
    args = request.args
    if not any(args.get(k) for k in ("type", "id", "q", "attrs")):
        raise NgsiError(400, "BadRequestData", "give at least one of type, id, q, attrs")
    types = args.get("type", "").split(",") if args.get("type") else list(TYPES)
    unknown = [t for t in types if t not in TYPES]
    if unknown:  # CIM 009: an unknown type matches nothing (no error)
        types = [t for t in types if t in TYPES]
    ids = set(args["id"].split(",")) if args.get("id") else None
    terms = _query(args["q"]) if args.get("q") else []
    attrs = set(args["attrs"].split(",")) if args.get("attrs") else None
    limit = _int("limit", 20, 0, MAX_LIMIT)
    offset = _int("offset", 0, 0, 10 ** 9)
    found = [e for e in _entities(web_db.get_db(), types)
             if (ids is None or e["id"] in ids) and _matches(e, terms)
             and (attrs is None or attrs & set(e))]
    page = [_pick(e, attrs) for e in found[offset:offset + limit]]
    return _linked(page, len(found) if args.get("count") == "true" else None)


@bp.get("/entities/<path:entity_id>")
@require("read")
def entity(entity_id):
    """One entity by id (attrs to pick attributes)."""
    _check_uri(entity_id)
    model = entity_id.split(":")[2] if entity_id.count(":") >= 4 else None
    found = [e for e in _entities(web_db.get_db(), [model] if model in TYPES else [])
             if e["id"] == entity_id]
    if not found:
        raise NgsiError(404, "ResourceNotFound", f"no entity {entity_id}")
    attrs = set(request.args["attrs"].split(",")) if request.args.get("attrs") else None
    return _linked(_pick(found[0], attrs))


@bp.get("/temporal/entities/<path:entity_id>")
@require("read")
def temporal(entity_id):
    """An entity's history from the stored readings: timerel (before, after, between) with
    timeAt and endTimeAt, attrs, lastN."""
    _check_uri(entity_id)
    parts = entity_id.split(":")
    if len(parts) != 5 or parts[:2] != ["urn", "ngsi-ld"] or parts[2] not in TYPES \
            or parts[3] != "polylink":
        raise NgsiError(404, "ResourceNotFound", f"no entity {entity_id}")
    model, node_id = parts[2], parts[4]
    db = web_db.get_db()
    if not export_store.node_facts(db, [node_id]):
        raise NgsiError(404, "ResourceNotFound", f"no entity {entity_id}")
    since = until = None
    timerel = request.args.get("timerel")
    if timerel == "before":  # strictly before and after (CIM 009 4.11)
        until = _time("timeAt") - 1e-6
    elif timerel == "after":
        since = _time("timeAt") + 1e-6
    elif timerel == "between":
        since, until = _time("timeAt"), _time("endTimeAt")
    elif timerel is not None:
        raise NgsiError(400, "BadRequestData", "timerel must be before, after or between")
    last_n = _int("lastN", MAX_LIMIT, 1, MAX_LIMIT)
    attrs = set(request.args["attrs"].split(",")) if request.args.get("attrs") else None
    out: dict = {"id": entity_id, "type": model}
    for qid, term in _terms(model).items():
        if attrs is not None and term.attribute not in attrs:
            continue
        rows = telemetry_store.readings(db, node_id, since, until, [qid], limit=last_n)
        instances = [ngsild.prop(round(v * term.factor, 6), term.unit_code, adapter.iso(t))
                     for t, _q, inst, v in rows if inst == 0]
        if instances:
            out[term.attribute] = instances
    return _linked(out)
