"""The OpenAPI document: valid (openapi-spec-validator), complete (every /api/v1 route of the URL
map is described, nothing described is missing), and true (a real response of every described
operation matches its status, media type and schema)."""

import json
import re
import time
from dataclasses import replace

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from polylink import proto, quantities
from rollout_nodes import Nodes, _release  # tests/fleet/ is on sys.path

from fleet import create_app
from fleet.ingest import Ingest
from fleet.senml import intake
from fleet.store import alerts as alert_store
from fleet.store import exports as export_store
from fleet.store import nodes as node_store
from fleet.store import profiles as profile_store
from fleet.web import auth, openapi
from fleet.web.api import PREFIX

DOC = openapi.document()
NGSI = openapi.ngsild_document()
NGSI_PREFIX = NGSI["servers"][0]["url"]  # /ngsi-ld/v1


def frame(mtype, seq, body) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[:proto.encode(buf, mtype, seq, body, None)])


def rule_to_path(rule: str, prefix: str = PREFIX) -> str:
    """/api/v1/alerts/<int:alert_id>/<any(ack, resolve):action> -> /alerts/{alert_id}/{action}"""
    return re.sub(r"<(?:[^<>:]+:)?([a-z_]+)>", r"{\1}", rule.removeprefix(prefix))


@pytest.mark.parametrize("doc", [DOC, NGSI], ids=["api", "ngsi-ld"])
def test_the_document_is_valid_openapi_3_1(doc):
    validate(doc)  # raises with the path of the first error
    assert doc["openapi"].startswith("3.1")


@pytest.mark.parametrize("doc", [DOC, NGSI], ids=["api", "ngsi-ld"])
def test_every_api_route_is_described_and_nothing_else(app, doc):
    prefix = doc["servers"][0]["url"]
    routes = {(rule_to_path(r.rule, prefix), m.lower())
              for r in app.url_map.iter_rules() if r.rule.startswith(prefix + "/")
              for m in r.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, method, _op in openapi.operations(doc)}
    assert routes - described == set(), "describe these in the feature's openapi.yaml"
    assert described - routes == set(), "described but not served"
    ids = [op["operationId"] for _p, _m, op in openapi.operations(doc)]
    assert len(ids) == len(set(ids))


def test_fragments_cannot_overwrite_each_other():
    base = {"paths": {"/nodes": {"get": {}}}, "components": {"schemas": {"Node": {}}}}
    merged = openapi.merge(base, {"paths": {"/nodes": {"post": {}}}}, "a")
    assert set(merged["paths"]["/nodes"]) == {"get", "post"}
    with pytest.raises(openapi.SpecError, match="GET /nodes is already described"):
        openapi.merge(base, {"paths": {"/nodes": {"get": {}}}}, "b")
    with pytest.raises(openapi.SpecError, match="schemas/Node is already defined"):
        openapi.merge(base, {"components": {"schemas": {"Node": {}}}}, "c")
    with pytest.raises(openapi.SpecError, match="not info"):
        openapi.merge(base, {"info": {}}, "d")


def _resolve(node, doc=DOC):
    while "$ref" in node:
        target = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


class Checker:
    """Calls the API and checks each answer against the operation the document describes."""

    def __init__(self, client, headers, doc=DOC):
        self.client = client
        self.headers = headers
        self.doc = doc
        self.prefix = doc["servers"][0]["url"]
        self.seen: dict[tuple, set] = {}

    def __call__(self, method, template, values=None, expect=None, **kwargs):
        path = template.format(**(values or {}))
        headers = {**self.headers, **kwargs.pop("headers", {})}  # a supplier's token replaces
        r = self.client.open(self.prefix + path, method=method.upper(), headers=headers, **kwargs)
        op = self.doc["paths"][template][method]
        status = str(r.status_code)
        assert status in op["responses"], f"{method} {path}: {status} not described: {r.data}"
        if expect is not None:
            assert r.status_code == expect, (method, path, r.status_code, r.data[:300])
        described = _resolve(op["responses"][status], self.doc)
        content = described.get("content")
        if content is None:
            assert not r.data, f"{method} {path}: {status} has a body the document does not give"
        else:
            media = r.mimetype
            assert media in content, f"{method} {path}: {media} not in {sorted(content)}"
            if media.endswith("json"):
                schema = {"$ref": "#/x", "x": content[media]["schema"],
                          "components": self.doc["components"]}
                errors = list(Draft202012Validator(schema).iter_errors(json.loads(r.data)))
                assert not errors, f"{method} {path} {status}: " + "; ".join(
                    f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
        for name, header in described.get("headers", {}).items():
            if _resolve(header, self.doc).get("required"):
                assert name in r.headers, f"{method} {path}: header {name} described, not sent"
        self.seen.setdefault((template, method), set()).add(status)
        return r


@pytest.fixture
def api(mosquitto_session, settings, db):
    """An admin token's checker on an app whose broker is a real mosquitto (commands go out)."""
    settings = replace(settings, mqtt_port=mosquitto_session.port)
    app = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "test"})
    token = auth.create_token(db, "root", "admin")
    return Checker(app.test_client(), {"Authorization": f"Bearer {token}"})


def test_every_operation_answers_as_described(api, db):
    now = time.time()
    ing = Ingest(db)
    ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, 0, [(0, 0, 21.5), (2, 0, 3.71)]), now - 30)
    ing.add("pl/v1/n01/up", b"\xff\xff", now - 20)
    ing.flush()
    n01 = {"node_id": "n01"}

    api("get", "/openapi.json", expect=200)
    assert api("get", "/openapi-ngsi-ld.json", expect=200).json == NGSI
    api("get", "/openapi.json", headers={"Authorization": "Bearer plt_wrong"}, expect=401)
    api("get", "/nodes", expect=200)
    api("get", "/nodes/{node_id}", n01, expect=200)
    api("get", "/nodes/{node_id}", {"node_id": "ghost"}, expect=404)
    api("get", "/nodes/{node_id}/telemetry", n01, expect=200)
    api("get", "/nodes/{node_id}/telemetry", n01, query_string={"since": "yesterday"}, expect=400)
    api("get", "/nodes/{node_id}/bad-frames", n01, expect=200)
    r = api("post", "/nodes/{node_id}/commands", n01, json={"command": "identify"}, expect=202)
    api("get", "/nodes/{node_id}/commands/{cid}", dict(n01, cid=r.json["id"]), expect=200)
    api("post", "/nodes/{node_id}/config", n01, json={"interval": 60}, expect=202)
    api("get", "/export", query_string={"nodes": "n01", "format": "senml"}, expect=200)
    api("get", "/export", query_string={"format": "csv"}, expect=200)
    api("get", "/export", query_string={"nodes": "ghost"}, expect=404)

    r = api("post", "/nodes", json={"id": "reg-1", "board": "ESP32_GENERIC"}, expect=201)
    reg = {"node_id": "reg-1"}
    api("get", "/nodes/{node_id}/identity", reg, expect=200)
    api("post", "/nodes/{node_id}/rotate", reg, expect=200)
    api("post", "/nodes/{node_id}/image", reg, json={"mqtt_host": "10.0.0.2"}, expect=200)
    api("post", "/nodes/{node_id}/revoke", reg, expect=200)
    api("get", "/claims", query_string={"state": "all"}, expect=200)
    api("post", "/claims/{claim_id}/{decision}", {"claim_id": 999, "decision": "approve"},
        expect=404)

    alert_store.open_alert(db, "n01", "battery_low", "3.2 V", now)
    r = api("get", "/alerts", expect=200)
    api("post", "/alerts/{alert_id}/{action}",
        {"alert_id": r.json["alerts"][0]["id"], "action": "ack"}, expect=200)

    _release(db, "0.2.0")
    Nodes(db, ["n-000", "n-001"])
    api("get", "/releases", expect=200)
    api("get", "/releases/{version}", {"version": "0.2.0"}, expect=200)
    api("post", "/releases", data=b"not a tar", content_type="application/x-tar", expect=400)
    r = api("post", "/rollouts", json={"release": "0.2.0", "target": {"nodes": ["n-000"]},
                                       "stages": [{"percent": 100, "soak": 60}]}, expect=201)
    rid = {"rid": r.json["id"]}
    api("get", "/rollouts", expect=200)
    api("get", "/rollouts/{rid}", rid, expect=200)
    api("post", "/rollouts/{rid}/nodes", rid, json={"nodes": ["n-001"]}, expect=200)
    api("post", "/rollouts/{rid}/{action}", dict(rid, action="pause"), expect=200)
    api("get", "/nodes/{node_id}/ota", {"node_id": "n-000"}, expect=200)

    tts = {"kind": "tts", "host": "eu1.cloud.thethings.network", "application": "city",
           "password": "NNSXS.secret", "downlinks_per_day": 10}
    api("put", "/providers/{name}", {"name": "ttn"}, json=tts, expect=200)
    api("get", "/providers", expect=200)
    api("get", "/nodes/{node_id}/receptions", n01, expect=200)
    api("delete", "/providers/{name}", {"name": "ttn"}, expect=204)

    auth.create_token(db, "script", "viewer")
    auth.create_user(db, "sam", "correct horse", "viewer")
    api("get", "/tokens", expect=200)
    api("post", "/tokens/{name}/revoke", {"name": "script"}, expect=200)
    api("get", "/users", expect=200)
    api("post", "/users/{name}/{action}", {"name": "sam", "action": "disable"}, expect=200)

    api("get", "/exports", expect=200)
    hook = {"kind": "webhook", "url": "https://city.example/hook", "secret": "k", "tags": [],
            "from_start": True}
    r = api("put", "/exports/{name}", {"name": "city"}, json=hook, expect=200)
    assert r.json["behind"] == 2 and r.json["state"] == "catching up"  # n01's two readings
    api("put", "/exports/{name}", {"name": "city"}, json=dict(hook, url="https://evil.example/",
                                                               secret=None), expect=400)
    export_store.advance(db, "city", (0, 0), (0, 0), 1, [("r:n01:0:0:1000", "HTTP 422 no")], now)
    r = api("get", "/exports/{name}", {"name": "city"}, expect=200)
    assert r.json["refused_items"][0]["item_id"] == "r:n01:0:0:1000"
    api("get", "/exports/{name}", {"name": "ghost"}, expect=404)
    api("get", "/exports", expect=200)
    api("delete", "/exports/{name}", {"name": "city"}, expect=204)
    api("put", "/exports/readers/{name}", {"name": "grafana"}, json={"tags": ["park"]},
        expect=201)
    r = api("put", "/exports/readers/{name}", {"name": "grafana"}, json={}, expect=200)
    assert r.json["tags"] == []  # a new password and selection for the same login
    api("put", "/exports/readers/{name}", {"name": "Bad"}, json={}, expect=400)
    api("get", "/exports/readers", expect=200)
    api("delete", "/exports/readers/{name}", {"name": "grafana"}, expect=204)
    api("delete", "/exports/readers/{name}", {"name": "grafana"}, expect=404)

    lpp = {"codec": "lpp", "interval": 900}
    api("put", "/profiles/{name}", {"name": "lpp-sensor"}, json=lpp, expect=200)
    api("put", "/profiles/{name}", {"name": "Bad Name"}, json=lpp, expect=400)
    api("get", "/profiles", expect=200)
    api("get", "/profiles/{name}", {"name": "lpp-sensor"}, expect=200)
    api("get", "/profiles/{name}", {"name": "ghost"}, expect=404)
    api("post", "/profiles/try", json=dict(lpp, payloads=["0367010F", "03"]), expect=200)
    r = api("post", "/devices", json={"dev_eui": "70B3D57ED0001001", "profile": "lpp-sensor"},
            expect=201)
    dev = {"node_id": r.json["node_id"]}
    api("post", "/devices", data="dev_eui,profile\n70B3D57ED0001002,lpp-sensor\n",
        content_type="text/csv", expect=200)
    api("put", "/nodes/{node_id}/profile", dev, json={"profile": "lpp-sensor"}, expect=200)
    api("post", "/nodes/{node_id}/profile-commands", dev, json={"command": "x"}, expect=400)
    api("delete", "/profiles/{name}", {"name": "lpp-sensor"}, expect=409)
    supplier = intake.add_supplier(db, "acme")
    profile_store.set_supplier(db, dev["node_id"], "acme")
    api("post", "/ingest/senml", query_string={"node": dev["node_id"]},
        data=b'[{"n": "co2", "v": 500}]', content_type="application/senml+json",
        headers={"Authorization": f"Bearer {supplier}"}, expect=200)
    api("post", "/suppliers", json={"name": "wx-co"}, expect=201)
    api("post", "/suppliers", json={"name": "wx-co"}, expect=409)
    api("post", "/suppliers", json={"name": "Wx Co"}, expect=400)
    api("get", "/suppliers", expect=200)
    api("put", "/nodes/{node_id}/supplier", dev, json={"supplier": "wx-co"}, expect=200)
    api("put", "/nodes/{node_id}/supplier", dev, json={"supplier": 1}, expect=400)
    api("put", "/nodes/{node_id}/supplier", {"node_id": "ghost"}, json={"supplier": None},
        expect=404)
    r = api("post", "/suppliers/{name}/rotate", {"name": "wx-co"}, expect=200)
    assert r.json["token"].startswith("pls_")
    api("post", "/suppliers/{name}/rotate", {"name": "ghost"}, expect=404)
    api("delete", "/suppliers/{name}", {"name": "wx-co"}, expect=204)
    api("delete", "/suppliers/{name}", {"name": "wx-co"}, expect=404)

    missing = {(p, m) for p, m, _op in openapi.operations(DOC)} - set(api.seen)
    assert not missing, f"add a call for each of these: {sorted(missing)}"


def test_every_ngsild_operation_answers_as_described(app, db):
    """The NGSI-LD read side against its own document: entities, one entity, the history."""
    token = auth.create_token(db, "city", "viewer")
    ngsi = Checker(app.test_client(), {"Authorization": f"Bearer {token}"}, NGSI)
    now = time.time()
    battery = quantities.lookup("battery_level")
    ing = Ingest(db)
    for seq in range(3):
        ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, seq, [(0, 0, 20 + seq), (1, 0, 55.0),
                                                              (battery, 0, 87)]), now - 30 + seq)
    ing.flush()
    node_store.set_place(db, "n01", 52.52, 13.405, "Marktplatz")
    weather = {"entity_id": "urn:ngsi-ld:WeatherObserved:polylink:n01"}

    r = ngsi("get", "/entities", query_string={"type": "Device,WeatherObserved",
                                               "count": "true"}, expect=200)
    assert r.headers["NGSILD-Results-Count"] == "2"
    assert {e["type"] for e in r.json} == {"Device", "WeatherObserved"}
    ngsi("get", "/entities", query_string={"q": "temperature>=21", "attrs": "temperature"},
         expect=200)
    ngsi("get", "/entities", expect=400)
    ngsi("get", "/entities", query_string={"type": "Device"},
         headers={"Authorization": "Bearer plt_wrong"}, expect=401)
    r = ngsi("get", "/entities/{entity_id}", {"entity_id": "urn:ngsi-ld:Device:polylink:n01"},
             expect=200)
    assert r.json["batteryLevel"]["value"] == 0.87 and r.json["location"]["type"] == "GeoProperty"
    ngsi("get", "/entities/{entity_id}", weather, expect=200)
    ngsi("get", "/entities/{entity_id}", {"entity_id": "urn:ngsi-ld:Device:polylink:zz"},
         expect=404)
    ngsi("get", "/entities/{entity_id}", {"entity_id": "lamp-7"}, expect=400)  # not a URI
    r = ngsi("get", "/temporal/entities/{entity_id}", weather, query_string={"lastN": 2},
             expect=200)
    assert [i["value"] for i in r.json["temperature"]] == [21, 22]
    ngsi("get", "/temporal/entities/{entity_id}", weather,
         query_string={"timerel": "between", "timeAt": "2026-01-01T00:00:00Z"}, expect=400)
    ngsi("get", "/temporal/entities/{entity_id}",
         {"entity_id": "urn:ngsi-ld:WeatherObserved:polylink:zz"}, expect=404)

    missing = {(p, m) for p, m, _op in openapi.operations(NGSI)} - set(ngsi.seen)
    assert not missing, f"add a call for each of these: {sorted(missing)}"


def test_the_page_renders_the_document_without_scripts(app, db, client, form_token):
    auth.create_user(db, "vic", "correct horse", "viewer")
    client.post("/auth/login", data={"username": "vic", "password": "correct horse",
                                     "csrf_token": form_token(client, "/auth/login")})
    html = client.get("/api-docs/").get_data(as_text=True)
    for path, method, op in openapi.operations(DOC):
        assert f"<code>{method.upper()} {PREFIX}{path}</code>" in html, (method, path)
        assert op["summary"].replace("'", "&#39;") in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    r = client.get("/api-docs/openapi.json")
    assert r.status_code == 200 and r.json["info"]["title"] == DOC["info"]["title"]
    html = client.get("/api-docs/ngsi-ld").get_data(as_text=True)
    for path, method, _op in openapi.operations(NGSI):
        assert f"<code>{method.upper()} {NGSI_PREFIX}{path}</code>" in html, (method, path)
    assert "<script" not in html and 'href="/api-docs/openapi-ngsi-ld.json"' in html
    assert client.get("/api-docs/openapi-ngsi-ld.json").json == NGSI
    # The API itself takes tokens only: a session cookie gets nothing there.
    assert client.get(PREFIX + "/openapi.json").status_code == 401


def test_every_package_and_document_file_ships_in_the_wheel():
    """pyproject.toml lists each fleet package and each document file (an install that is not
    editable has nothing else); both were missing for features merged after the list was made."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(setup["packages"])
    on_disk = {".".join(p.parent.relative_to(root).parts)
               for p in (root / "fleet").rglob("__init__.py")}
    assert on_disk - packages == set(), "add these to [tool.setuptools] packages"
    for package, name in [(p, "openapi.yaml") for p in openapi.FRAGMENTS] + [openapi.NGSI_LD]:
        assert name in setup["package-data"].get(package, []), (package, name)
