"""Every route of the URL map, fed hostile numbers and nesting, answers 4xx, never 5xx (#19).

Walks app.url_map: a huge integer for every int converter, then for every query and form field
the view reads (recorded on a first request), and deeply nested JSON for every body. Logged in
as admin (and with an admin API token for /api/v1), so the checks reach the views' own code.
"""

import time

import pytest
from polylink import proto
from routewalk import frame, recording_app
from werkzeug.routing import AnyConverter, IntegerConverter, PathConverter

from fleet.ingest import Ingest
from fleet.web import auth

HUGE = "99999999999999999999999"
NESTED = "[" * 100000
PASSWORD = "correct horse"


class RecordingJSON(dict):
    """A JSON body that notes which keys a view asks for."""

    seen: set

    def get(self, key, default=None):
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.seen.add(key)
        return super().__contains__(key)



@pytest.fixture
def walker(settings, db):
    app, seen = recording_app(settings)

    plain_loads = app.json.loads

    def loads(text, **kwargs):
        from flask import request

        body = plain_loads(text, **kwargs)
        if isinstance(body, dict) and request and request.url_rule is not None:
            body = RecordingJSON(body)
            body.seen = seen.setdefault("json " + request.url_rule.rule, set())
        return body

    app.json.loads = loads
    auth.create_user(db, "root", PASSWORD, "admin")
    token = auth.create_token(db, "root-token", "admin")
    ing = Ingest(db)
    ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, 0, [(0, 0, 21.5)]), time.time() - 30)
    ing.add("pl/v1/n01/up", b"\xff\xff", time.time() - 20)
    ing.flush()
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "root", "password": PASSWORD})
    assert r.status_code == 302
    return app, client, {"Authorization": f"Bearer {token}"}, seen


def _path(rule, value_for_int) -> str:
    values = {}
    for name, conv in rule._converters.items():
        if isinstance(conv, IntegerConverter):
            values[name] = value_for_int
        elif isinstance(conv, AnyConverter):
            values[name] = sorted(conv.items)[0]
        elif isinstance(conv, PathConverter):
            values[name] = "style.css"
        elif name == "action":
            values[name] = "pause"
        else:
            values[name] = "n01"
    path = rule.rule
    for name, value in values.items():
        path = path.replace(f"<{_converter_text(rule, name)}>", str(value))
    return path


def _converter_text(rule, name) -> str:
    import re

    match = re.search(r"<([^<>]*\b" + re.escape(name) + r")>", rule.rule)
    return match.group(1)


def test_no_route_answers_5xx_to_huge_numbers_or_deep_nesting(walker):
    app, client, api_headers, seen = walker
    failures = []
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    assert len(rules) > 40

    def call(method, path, rule, **kwargs):
        headers = api_headers if path.startswith("/api/") else {}
        r = client.open(path, method=method, headers=headers, **kwargs)
        if r.status_code >= 500:
            failures.append(f"{method} {path} {kwargs.get('query_string') or ''} -> "
                            f"{r.status_code}")
        return r

    for rule in rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if rule.endpoint == "auth.logout":
                continue  # would end the walk's session
            plain = _path(rule, 1)
            # First with ordinary values, to learn which fields the view reads.
            call(method, plain, rule)
            call(method, _path(rule, HUGE), rule)
            fields = seen.get(rule.rule, set()) - {"csrf_token"}
            for field in sorted(fields):
                if method == "GET":
                    call(method, plain, rule, query_string={field: HUGE})
                else:
                    call(method, plain, rule, query_string={field: HUGE},
                         data={f: HUGE for f in fields})
            if method in ("POST", "PUT", "PATCH"):
                call(method, plain, rule, data=NESTED, content_type="application/json")
                call(method, plain, rule, json={})
                for key in sorted(seen.get("json " + rule.rule, set())):
                    call(method, plain, rule, json={key: int(HUGE)})
                    call(method, plain, rule, json={key: [int(HUGE)]})
    # The recording works: the walk did feed the fields the issue found.
    assert {"page"} <= seen["/nodes/"] and {"q"} <= seen["/nodes/<node_id>/chart.svg"]
    assert "before" in seen["/admin/audit"]
    # The suppliers' page and the node page's profile commands (issue 17) are walked too.
    assert {"name"} <= seen["/suppliers/"] and {"node_id", "supplier"} <= seen["/suppliers/nodes"]
    assert {"command", "data"} <= seen["/nodes/<node_id>/profile-commands"]
    assert {"supplier"} <= seen["json /api/v1/nodes/<node_id>/supplier"]
    assert not failures, "\n".join(failures)


def test_a_bad_number_says_what_was_wrong(walker):
    _app, client, api_headers, _seen = walker
    r = client.get("/api/v1/nodes/n01/telemetry?limit=" + HUGE, headers=api_headers)
    assert r.status_code == 400 and "limit=" in r.get_json()["error"]
    r = client.get("/nodes/?page=" + HUGE)
    assert r.status_code == 400 and "page=" in r.get_data(as_text=True)
    r = client.get("/api/v1/rollouts/" + HUGE, headers=api_headers)
    assert r.status_code == 404
    r = client.post("/api/v1/rollouts", data=NESTED, headers=api_headers,
                    content_type="application/json")
    assert r.status_code == 400 and "JSON" in r.get_json()["error"]
