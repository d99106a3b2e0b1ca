"""A simulated NGSI-LD context broker: only the batch upsert, following ETSI GS CIM 009
(v1.8, 5.6.8 "Batch Entity Creation or Update (Upsert)" and 6.15, 6.3.5 for the JSON-LD
@context in a Link header, 5.5.2 for Entity id/type, 4.5.5 for multi-attributes by datasetId).
A simulation because no real NGSI-LD broker (Orion-LD, Scorpio, Stellio) installs from PyPI,
Debian or npm; docs/integrations.md says so. Every entity it stores is also expanded as JSON-LD
(pyld) from the Link'ed context, the way a broker does, so a term the context does not know
fails here, not at a city.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ngsild_ld import expand

UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
JSONLD_REL = "http://www.w3.org/ns/json-ld#context"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
ATTR_TYPES = {"Property", "Relationship", "GeoProperty"}


def problem(kind: str, title: str, detail: str) -> dict:
    """A ProblemDetails body (IETF RFC 7807, CIM 009 5.5.4)."""
    return {"type": ERRORS + kind, "title": title, "detail": detail}


def link_context(header: str | None) -> str | None:
    """The context URL of a Link header with the JSON-LD context relation, else None."""
    if not header or "," in header:
        return None  # exactly one JSON-LD context link (6.3.5)
    url, _, params = header.partition(";")
    url = url.strip()
    if not (url.startswith("<") and url.endswith(">")) or f'rel="{JSONLD_REL}"' not in params:
        return None
    return url[1:-1]


def entity_error(entity) -> str | None:
    """Why an entity is not a valid NGSI-LD Entity (normalized form), or None."""
    if not isinstance(entity, dict):
        return "an entity must be a JSON object"
    eid = entity.get("id")
    if not isinstance(eid, str) or ":" not in eid or any(c in eid for c in ' <>"{}|\\^`'):
        return f"entity id {eid!r} is not a URI"
    if not isinstance(entity.get("type"), str) or not entity["type"]:
        return "entity type is missing"
    if "@context" in entity:
        return "@context in the body with Content-Type application/json"
    for name, attr in entity.items():
        if name in ("id", "type"):
            continue
        # A multi-attribute (4.5.5): an array of instances, each with its own datasetId, at
        # most one without (the default instance).
        instances = attr if isinstance(attr, list) and attr else [attr]
        datasets = [a.get("datasetId") if isinstance(a, dict) else None for a in instances]
        if len(set(datasets)) != len(datasets):
            return f"attribute {name} has two instances with the same datasetId"
        for one in instances:
            why = attribute_error(name, one)
            if why:
                return why
    return None


def attribute_error(name: str, attr) -> str | None:
    """Why one attribute instance is not valid, or None."""
    if not isinstance(attr, dict) or attr.get("type") not in ATTR_TYPES:
        return f"attribute {name} is not a Property, Relationship or GeoProperty"
    if attr["type"] == "Relationship" and not isinstance(attr.get("object"), str):
        return f"relationship {name} has no object URI"
    if attr["type"] != "Relationship" and "value" not in attr:
        return f"property {name} has no value"
    if attr["type"] == "GeoProperty" and attr["value"].get("type") != "Point":
        return f"geoproperty {name} is not a GeoJSON geometry this broker takes"
    dataset = attr.get("datasetId")
    if dataset is not None and not (isinstance(dataset, str) and ":" in dataset):
        return f"datasetId of {name} is not a URI"
    at = attr.get("observedAt")
    if at is not None and not (isinstance(at, str) and at.endswith("Z") and "T" in at):
        return f"observedAt of {name} is not a DateTime"
    return None


def instances_of(attr) -> list[dict]:
    return attr if isinstance(attr, list) else [attr]


def updated(old: dict, new: dict) -> dict:
    """Entity old after an update with new's attributes (5.6.3, 6.15.3.1 options=update): an
    attribute instance replaces the one with the same datasetId; the others are kept."""
    out = dict(old)
    for name, attr in new.items():
        if name in ("id", "type") or name not in old:
            out[name] = attr
            continue
        by_dataset = {a.get("datasetId"): a for a in instances_of(old[name])}
        by_dataset.update({a.get("datasetId"): a for a in instances_of(attr)})
        merged = list(by_dataset.values())
        out[name] = merged if len(merged) > 1 else merged[0]
    return out


class NgsiLdBroker:
    """Entities by id (normalized form as last upserted) and every upsert's expanded form."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.entities: dict[str, dict] = {}
        self.expanded: dict[str, dict] = {}
        self.instances: list[tuple[str, str, str]] = []  # (entity id, attribute, observedAt)
        self.requests = 0
        self.down = False
        self.refuse_ids: set[str] = set()  # substrings of entity ids answered with an error
        # As refuse_ids, but the whole request gets 400 (a broker without per-entity 207s)
        self.refuse_requests_with: set[str] = set()
        self.fail_requests: set[int] = set()  # numbers of requests (1, 2, ...) answered 503
        self.log: list[tuple[int, list[str]]] = []  # (status, entity ids) of every upsert
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def upsert(self, headers, query: dict, body: bytes) -> tuple[int, object]:
        if self.down:
            return 503, problem("InternalError", "Service unavailable", "maintenance")
        if self.token and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, problem("Unauthorized", "Unauthorized", "bearer token required")
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype not in ("application/json", "application/ld+json"):
            return 415, problem("UnsupportedMediaType", "Unsupported Media Type", ctype)
        context = link_context(headers.get("Link")) if ctype == "application/json" else None
        if ctype == "application/json" and headers.get("Link") and context is None:
            return 400, problem("BadRequestData", "Bad Link header", headers.get("Link"))
        options = query.get("options", ["replace"])[0]
        if options not in ("replace", "update"):
            return 400, problem("BadRequestData", "Bad options", options)
        try:
            entities = json.loads(body)
        except ValueError as e:
            return 400, problem("InvalidRequest", "Invalid JSON", str(e))
        if not isinstance(entities, list):
            return 400, problem("BadRequestData", "Not an array", "the body must be an array")
        ids = [e.get("id", "") for e in entities if isinstance(e, dict)]
        if any(s in i for s in self.refuse_requests_with for i in ids):
            return 400, problem("BadRequestData", "Bad entity", "refused the whole batch")
        success, errors, created = [], [], []
        for entity in entities:
            why = entity_error(entity)
            eid = entity.get("id") if isinstance(entity, dict) else None
            if why is None and any(s in eid for s in self.refuse_ids):
                why = "refused by this broker's policy"
            if why is None:
                try:
                    expanded = expand(entity, context) if context else None
                except Exception as e:  # noqa: BLE001 - pyld's errors are many kinds
                    why = f"cannot expand with {context}: {e}"
            if why is not None:
                errors.append({"entityId": eid, "error": problem("BadRequestData",
                                                                  "Bad entity", why)})
                continue
            old = self.entities.get(eid)
            if old is None:
                created.append(eid)
            stored = updated(old, entity) if old is not None and options == "update" \
                else entity
            self.entities[eid] = stored
            self.expanded[eid] = expanded
            for name, attr in entity.items():
                for one in instances_of(attr) if name not in ("id", "type") else ():
                    if one.get("observedAt"):
                        self.instances.append((eid, name, one["observedAt"]))
            success.append(eid)
        if errors:
            return 207, {"success": success, "errors": errors}
        return (201, created) if created else (204, None)

    def _handler(self):
        broker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if parts.path.rstrip("/") != UPSERT:
                    return self._answer(404, problem("ResourceNotFound", "Not found", parts.path))
                with broker.lock:
                    broker.requests += 1
                    if broker.requests in broker.fail_requests:
                        status, answer = 503, problem("InternalError", "Service unavailable",
                                                      "overloaded")
                    else:
                        status, answer = broker.upsert(self.headers, parse_qs(parts.query), body)
                    try:
                        ids = [e["id"] for e in json.loads(body)]
                    except (ValueError, TypeError, KeyError):
                        ids = []
                    broker.log.append((status, ids))
                self._answer(status, answer)

            def _answer(self, status, answer):
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/problem+json"
                                     if isinstance(answer, dict) and "type" in answer
                                     else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
