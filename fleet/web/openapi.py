"""The OpenAPI 3.1 description of /api/v1, served as /api/v1/openapi.json and as a page, and the
one of the NGSI-LD read side (/ngsi-ld/v1) as /api/v1/openapi-ngsi-ld.json and a page beside it.

Each feature describes its own routes in an `openapi.yaml` beside its API module (paths relative
to /api/v1 and the components they add); fleet/web/openapi.yaml is the base (info, security,
errors, shared parameters and schemas). document() merges them: a path's methods may come from
several features (GET /nodes from nodes, POST /nodes from identity), but one operation or one
component described twice is an error, so two branches cannot silently overwrite each other.
tests/fleet/web/test_openapi.py fails when a route of /api/v1 is not described.
"""

import copy
import functools
import json
from importlib import resources

import yaml
from flask import Blueprint, Response, render_template

from fleet.web.auth import require

# The packages whose openapi.yaml is part of the document, the base first. A feature with
# /api/v1 routes adds its package here (docs/integrations.md, "OpenAPI").
FRAGMENTS = ("fleet.web", "fleet.nodes", "fleet.identity", "fleet.alerts", "fleet.ota",
             "fleet.providers", "fleet.profiles", "fleet.senml", "fleet.exports")
# The NGSI-LD read side (/ngsi-ld/v1) is a second, whole document: one base URL per document is
# what validators and code generators handle (docs/integrations.md, "OpenAPI").
NGSI_LD = ("fleet.exports", "ngsild.openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch")

bp = Blueprint("openapi", __name__)  # under /api/v1
page = Blueprint("api_docs", __name__, url_prefix="/api-docs")


class SpecError(Exception):
    """The fragments cannot be merged into one document."""


def merge(base: dict, fragment: dict, origin: str) -> dict:
    """base with fragment's paths and components added; a clash raises SpecError."""
    unknown = set(fragment) - {"paths", "components"}
    if unknown:
        raise SpecError(f"{origin}: only paths and components may be added, not "
                        f"{', '.join(sorted(unknown))}")
    out = copy.deepcopy(base)
    paths = out.setdefault("paths", {})
    for path, item in (fragment.get("paths") or {}).items():
        into = paths.setdefault(path, {})
        for key, operation in item.items():
            if key in into:
                raise SpecError(f"{origin}: {key.upper()} {path} is already described")
            into[key] = operation
    components = out.setdefault("components", {})
    for section, entries in (fragment.get("components") or {}).items():
        into = components.setdefault(section, {})
        for name, value in entries.items():
            if name in into:
                raise SpecError(f"{origin}: components/{section}/{name} is already defined")
            into[name] = value
    return out


def _load(package: str, name: str = "openapi.yaml") -> dict:
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


@functools.cache
def document() -> dict:
    """The whole description, merged from FRAGMENTS (read once per process)."""
    doc = _load(FRAGMENTS[0])
    for package in FRAGMENTS[1:]:
        doc = merge(doc, _load(package), f"{package.replace('.', '/')}/openapi.yaml")
    return doc


@functools.cache
def ngsild_document() -> dict:
    """The description of the NGSI-LD read side (servers /ngsi-ld/v1)."""
    return _load(*NGSI_LD)


@functools.cache
def document_json(which: str = "api") -> bytes:
    doc = document() if which == "api" else ngsild_document()
    return json.dumps(doc, indent=1, sort_keys=False).encode()


def operations(doc: dict):
    """(path, method, operation) of every operation, in document order."""
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _json_response(which: str = "api") -> Response:
    return Response(document_json(which), mimetype="application/json")


@bp.get("/openapi.json")
@require("read")
def openapi_json():
    return _json_response()


@bp.get("/openapi-ngsi-ld.json")
@require("read")
def ngsild_json():
    return _json_response("ngsi-ld")


@page.get("/openapi.json")
@require("read")
def page_json():
    """The same document for a logged-in browser (the API itself takes tokens only)."""
    return _json_response()


@page.get("/openapi-ngsi-ld.json")
@require("read")
def page_ngsild_json():
    return _json_response("ngsi-ld")


def _resolve(doc: dict, node):
    """node with a top-level $ref to components replaced by what it points at."""
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


@page.get("/")
@require("read")
def index():
    """A plain page from the document: no script, nothing fetched from elsewhere."""
    return _page(document(), "api_docs.page_json", "/openapi.json")


@page.get("/ngsi-ld")
@require("read")
def ngsild():
    """The NGSI-LD read side's document as the same kind of page."""
    return _page(ngsild_document(), "api_docs.page_ngsild_json", "/api/v1/openapi-ngsi-ld.json")


def _page(doc: dict, json_endpoint: str, token_url: str):
    groups: dict[str, list] = {}
    for path, method, op in operations(doc):
        params = [_resolve(doc, p) for p in op.get("parameters", [])]
        responses = []
        for status, response in op.get("responses", {}).items():
            response = _resolve(doc, response)
            schemas = {media: json.dumps(body.get("schema", {}), indent=1)
                       for media, body in (response.get("content") or {}).items()}
            responses.append((status, response.get("description", ""), schemas))
        body = op.get("requestBody")
        body = {media: json.dumps(b.get("schema", {}), indent=1)
                for media, b in ((body or {}).get("content") or {}).items()}
        groups.setdefault((op.get("tags") or ["other"])[0], []).append(
            {"method": method.upper(), "path": doc["servers"][0]["url"] + path, "op": op,
             "params": params, "body": body, "responses": responses})
    schemas = {name: json.dumps(schema, indent=1)
               for name, schema in doc["components"]["schemas"].items()}
    return render_template("api_docs.html", doc=doc, groups=groups, schemas=schemas,
                           json_endpoint=json_endpoint, token_url=token_url)
