"""Web UI: login, CSRF, escaping, fleet list, node page with chart, command form."""

import pytest
from polylink import proto

from fleet.ingest import Ingest
from fleet.nodes import charts, display
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store.migrate import open_db


def frame(mtype, seq, body, ts=None) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, mtype, seq, body, ts)
    return bytes(buf[:n])


@pytest.fixture
def node(db):
    import time

    now = time.time()
    ing = Ingest(db)
    for i in range(10):
        ing.add("pl/v1/n1/up", frame(proto.TELEMETRY, i, [(0, 0, 20.0 + i), (2, 0, 3.7)]),
                now - 600 + 60 * i)
    ing.add("pl/v1/n1/up", frame(proto.STATUS, 10, {"fw": "0.3.1", "uptime": 5,
                                                    "micropython": "1.24.1"}), now)
    ing.flush()
    return "n1"


@pytest.mark.parametrize("path", ["/nodes/", "/nodes/n1", "/"])
def test_pages_need_login(client, path):
    r = client.get(path, follow_redirects=True)
    assert r.request.path == "/auth/login"
    assert b'name="password"' in r.data


def test_login_with_wrong_password_fails_then_works(client, user, form_token):
    token = form_token(client, "/auth/login")
    r = client.post("/auth/login", data={"username": "alice", "password": "nope",
                                         "csrf_token": token})
    assert r.status_code == 401 and b"Wrong user name or password" in r.data
    r = client.post("/auth/login", data={"username": "alice", "password": "correct horse",
                                         "csrf_token": token})
    assert r.status_code == 302
    assert client.get("/nodes/").status_code == 200


def test_login_without_csrf_token_is_refused(client, user):
    r = client.post("/auth/login", data={"username": "alice", "password": "correct horse"})
    assert r.status_code == 400 and b"CSRF" in r.data
    assert client.get("/nodes/").status_code == 302


def test_login_is_rate_limited(client, user, app, form_token):
    token = form_token(client, "/auth/login")
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        r = client.post("/auth/login", data={"username": "alice", "password": "guess",
                                             "csrf_token": token})
        assert r.status_code == 401
    r = client.post("/auth/login", data={"username": "alice", "password": "correct horse",
                                         "csrf_token": token})
    assert r.status_code == 429 and b"Too many failed logins" in r.data


def test_login_does_not_redirect_off_site(client, user, form_token):
    token = form_token(client, "/auth/login")
    r = client.post("/auth/login?next=//evil.example/x", data={
        "username": "alice", "password": "correct horse", "csrf_token": token})
    assert r.headers["Location"].endswith("/nodes/")


def test_logout_needs_post_with_csrf(logged_in, form_token):
    assert logged_in.post("/auth/logout").status_code == 400
    token = form_token(logged_in, "/nodes/")
    assert logged_in.post("/auth/logout", data={"csrf_token": token}).status_code == 302
    assert logged_in.get("/nodes/").status_code == 302


def test_fleet_list_shows_state_firmware_and_battery(logged_in, node, db):
    node_store.enrol_node(db, "n2")
    page = logged_in.get("/nodes/").get_data(as_text=True)
    assert "2 match" in page
    assert "0.3.1" in page and "3.70 V" in page and ">online<" in page and ">new<" in page


def test_micropython_version_on_the_list_its_filter_the_node_page_and_the_overview(
        logged_in, node, db):
    node_store.enrol_node(db, "n2")
    ing = Ingest(db)
    ing.add("pl/v1/n3/up", frame(proto.STATUS, 1, {"fw": "0.3.1", "uptime": 5,
                                                   "micropython": "1.25.0"}), 1.0)
    ing.flush()
    page = logged_in.get("/nodes/").get_data(as_text=True)
    assert "3 match" in page and "<td class=\"wide\">1.24.1</td>" in page
    assert "<option>1.24.1</option>" in page and "<option>1.25.0</option>" in page
    page = logged_in.get("/nodes/?micropython=1.25.0").get_data(as_text=True)
    assert "1 matching" in page and ">n3<" in page and ">n1<" not in page
    page = logged_in.get("/nodes/?micropython=1.24.1&firmware=0.3.1").get_data(as_text=True)
    assert "1 matching" in page and ">n1<" in page
    page = logged_in.get("/nodes/?sort=micropython&dir=desc").get_data(as_text=True)
    assert page.index(">n3<") < page.index(">n1<") < page.index(">n2<")
    page = logged_in.get("/nodes/n1").get_data(as_text=True)
    assert '<dt>MicroPython</dt><dd data-live-fact="micropython">1.24.1</dd>' in page
    assert logged_in.get("/nodes/n2").get_data(as_text=True).count(
        '<dd data-live-fact="micropython">-</dd>') == 1
    page = logged_in.get("/").get_data(as_text=True)
    assert "By MicroPython" in page and "/nodes/?micropython=1.25.0" in page
    counts = node_store.overview(db)["micropython"]
    assert {k: v["total"] for k, v in counts.items()} == {"1.24.1": 1, "1.25.0": 1, "-": 1}


def test_node_name_is_escaped(logged_in, node, db):
    node_store.rename_node(db, "n1", '<script>alert("x")</script>')
    for path in ("/nodes/", "/nodes/n1"):
        page = logged_in.get(path).get_data(as_text=True)
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert" in page


def test_node_page_has_latest_values_and_svg_charts(logged_in, node):
    page = logged_in.get("/nodes/n1").get_data(as_text=True)
    assert "Temperature" in page and "29.0 °C" in page and "Cel" not in page
    assert '/nodes/n1/chart.svg?q=0&amp;i=0&amp;range=24h' in page
    r = logged_in.get("/nodes/n1/chart.svg?q=0&i=0&range=24h")
    assert r.mimetype == "image/svg+xml"
    svg = r.get_data(as_text=True)
    assert "<polyline" in svg and "<script" not in svg  # server-side chart, no JS
    assert ">Temperature in °C<" in svg
    assert ">30<" in svg and ">20<" in svg  # axis: round values around the ten readings


def test_unknown_node_page_is_404(logged_in):
    assert logged_in.get("/nodes/ghost").status_code == 404


def test_command_form_needs_csrf(logged_in, node):
    r = logged_in.post("/nodes/n1/commands", data={"command": "identify"})
    assert r.status_code == 400
    assert command_store.list_commands(open_db(logged_in.application.config["DATABASE"]),
                                       "n1") == []


def test_command_form_reports_errors_clearly(logged_in, node, form_token):
    token = form_token(logged_in, "/nodes/n1")
    r = logged_in.post("/nodes/n1/commands", data={"command": "set_interval", "arg": "soon",
                                                   "csrf_token": token}, follow_redirects=True)
    assert "is not a whole number" in r.get_data(as_text=True)
    r = logged_in.post("/nodes/n1/commands", data={"command": "identify", "csrf_token": token},
                       follow_redirects=True)
    # The test settings point at a closed port: the command is recorded, not sent.
    assert "Command not sent: cannot reach the broker" in r.get_data(as_text=True)


def test_command_form_sends_through_the_broker(mosquitto, node, settings, user, form_token):
    import dataclasses

    from fleet import create_app

    settings = dataclasses.replace(settings, mqtt_port=mosquitto.port)
    client = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "t"}).test_client()
    client.post("/auth/login", data={"username": "alice", "password": "correct horse",
                                     "csrf_token": form_token(client, "/auth/login")})
    token = form_token(client, "/nodes/n1")
    r = client.post("/nodes/n1/commands", data={"command": "identify", "csrf_token": token},
                    follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Command identify sent" in page and "alice" in page


def test_chart_geometry():
    assert charts.geometry([], 0, 100) is None
    c = charts.geometry([(0.0, 10.0, 10.0, 10.0), (50.0, 18.0, 19.0, 20.0),
                         (100.0, 15.0, 15.0, 15.0)], 0.0, 100.0)
    xs_ys = [tuple(map(float, p.split(","))) for p in c["line"].split()]
    assert xs_ys[0][0] == c["pad_l"] and xs_ys[-1][0] == c["w"] - c["pad_r"]
    band_ys = [float(p.split(",")[1]) for p in c["band"].split()]
    assert min(band_ys) == c["top"]  # the maximum of the slice's band is at the top
    assert [label for _y, label in c["ticks"]] == ["10", "15", "20"]
    assert c["ticks"][0][0] == c["bottom"] and c["ticks"][-1][0] == c["top"]


@pytest.mark.parametrize(("lo", "hi", "labels"), [
    (101320, 101550, ["101300", "101400", "101500", "101600"]),
    (1014.6, 1015.5, ["1014.5", "1015.0", "1015.5"]),
    (-3.2, 4.4, ["-5", "0", "5"]),
    (0.0012, 0.0031, ["0.001", "0.002", "0.003", "0.004"]),
    (-67, -65, ["-67", "-66", "-65"]),
    (3.1, 3.1, ["2.5", "3.0", "3.5", "4.0"]),  # one value: a range around it
    (0, 0, ["-0.5", "0.0", "0.5"]),
])
def test_chart_ticks_are_round_plain_numbers(lo, hi, labels):
    values, decimals = charts.ticks(lo, hi)
    assert [display.plain(v, decimals) for v in values] == labels
    assert values[0] <= lo and values[-1] >= hi


def test_chart_shows_the_unit_people_use():
    # 1013.2 hPa stored as Pa: the axis is in hPa, never 1.013e+05.
    c = charts.geometry([(0.0, 101320.0, 101330.0, 101340.0), (60.0, 101500.0, 101510.0,
                                                               101520.0)], 0.0, 60.0, 0.01)
    assert [label for _y, label in c["ticks"]] == ["1013", "1014", "1015", "1016"]
