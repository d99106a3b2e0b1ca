"""Web UI: overview, node list (search, filters, sort, pages, bulk), node page, alerts, map."""

import dataclasses
import json
import sqlite3
import time

import psycopg
import pytest
from polylink import proto

from fleet import create_app
from fleet.ingest import Ingest
from fleet.store import alerts as alert_store
from fleet.store import audit as audit_store
from fleet.store import commands as command_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store import upkeep as upkeep_store
from fleet.store import users as user_store
from fleet.store.base import BadFilter, connect, transaction
from fleet.web import auth

PASSWORD = "correct horse"
XSS = '<img src=x onerror="alert(1)">'


def frame(mtype, seq, body, ts=None) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, mtype, seq, body, ts)
    return bytes(buf[:n])


def login(client, form_token, name):
    r = client.post("/auth/login", data={"username": name, "password": PASSWORD,
                                         "csrf_token": form_token(client, "/auth/login")})
    assert r.status_code == 302
    return client


@pytest.fixture
def as_role(app, db, form_token):
    def make(role, the_app=None):
        name = f"{role}-user"
        if user_store.get_user(db, name) is None:
            auth.create_user(db, name, PASSWORD, role)
        return login((the_app or app).test_client(), form_token, name)

    return make


@pytest.fixture
def fleet(db):
    """A small fleet through the real ingest: two boards, two firmwares, a low battery."""
    now = time.time()
    ing = Ingest(db)
    for i in range(12):
        node = f"n{i:02d}"
        ing.add(f"pl/v1/{node}/up", frame(proto.TELEMETRY, 0,
                                          [(0, 0, 20.0 + i), (2, 0, 3.2 if i == 3 else 3.8)]),
                now - 30)
        ing.add(f"pl/v1/{node}/up", frame(proto.STATUS, 1, {"fw": "0.2.0" if i % 2 else "0.3.0",
                                                            "uptime": 9, "boots": 1,
                                                            "interval": 60, "rssi": -60 - i}),
                now - 20)
    ing.flush()
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET board = 'heltec' WHERE id < 'n06'")
        # n11 was last heard two hours ago: offline by the interval rule although its flag says 1.
        conn.execute("UPDATE nodes SET last_seen = ? WHERE id = 'n11'", (now - 7200,))
    node_store.set_name_and_tags(db, "n05", "Lamppost 5", ["north", "pilot"])
    node_store.set_place(db, "n05", 52.52, 13.40, "Main St 5")
    node_store.set_place(db, "n06", 52.53, 13.41, None)
    return [f"n{i:02d}" for i in range(12)]


# --- pages per role ------------------------------------------------------------------------------

READ_PAGES = ["/", "/nodes/", "/nodes/n05", "/nodes/n05/chart.svg?q=0&i=0&range=7d",
              "/nodes/n05/chart.svg?s=rssi&range=24h", "/alerts/", "/map"]


@pytest.mark.parametrize("role", auth.ROLES)
def test_every_role_reads_every_page(as_role, fleet, role):
    client = as_role(role)
    for path in READ_PAGES:
        assert client.get(path).status_code == 200, path


def _pg_writes_since(watcher):
    """A function that gives the tables of watcher's database where rows were inserted, updated
    or deleted since this call.

    Per database, not the cluster's next transaction id: the test cluster is shared, and
    autovacuum or another database's writes move that id too. A row written by a transaction
    that started from now on has an xmin past the snapshot's xmax; a deleted row shows as a
    smaller count (the cluster is new: xids have not wrapped).
    """
    tables = [r[0] for r in watcher.execute(
        "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables")]
    xmax = watcher.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                           ).fetchone()[0]

    def counts():
        return {t: watcher.execute(f"SELECT count(*), count(*) FILTER (WHERE xmin::text::bigint"
                                   f" >= %s) FROM {t}", [xmax]).fetchone() for t in tables}

    before = counts()
    return lambda: {t: (before[t], n) for t, n in counts().items() if n != before[t]}


def test_get_pages_do_no_writes(as_role, fleet, app, settings):
    """Pages read what `fleet upkeep` stored; no GET commits anything to the store."""
    client = as_role("admin")
    pages = READ_PAGES + ["/nodes/?status=alerting", "/alerts/?all=1", "/admin/users",
                          "/admin/audit"]
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and not rule.arguments and not rule.rule.startswith("/api/"):
            pages.append(rule.rule)
    if settings.database_url:
        watcher = psycopg.connect(settings.database_url, autocommit=True)
        changes = _pg_writes_since(watcher)
    else:
        watcher = sqlite3.connect(settings.db_path)
        # data_version changes whenever another connection commits to the file.
        version = watcher.execute("PRAGMA data_version").fetchone()[0]
        changes = lambda: watcher.execute("PRAGMA data_version").fetchone()[0] - version  # noqa: E731
    status = {path: client.get(path).status_code for path in pages}
    assert not changes(), status
    assert status["/"] == 200 and status["/alerts/"] == 200 and len(pages) > 12
    watcher.close()
    assert alert_store.list_alerts(fleet_db := connect(settings.db_path)) == [], "evaluated"
    fleet_db.conn.close()


def test_pages_say_how_fresh_the_alerts_are(as_role, fleet, db):
    client = as_role("viewer")
    page = client.get("/alerts/").get_data(as_text=True)
    assert "have not been evaluated yet" in page and "fleet alerts check" in page
    upkeep_store.mark_upkeep(db, "alerts", time.time() - 5, {})
    page = client.get("/").get_data(as_text=True)
    assert "Alerts evaluated 5 s ago" in page and "not been evaluated" not in page
    upkeep_store.mark_upkeep(db, "alerts", time.time() - 3600, {})
    page = client.get("/alerts/").get_data(as_text=True)
    assert "were last evaluated 1 h ago" in page


@pytest.mark.parametrize("path", READ_PAGES + ["/nodes/n05/live", "/admin/audit"])
def test_pages_need_a_login(client, fleet, path):
    r = client.get(path)
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]


@pytest.mark.parametrize("role", auth.ROLES)
def test_node_forms_shown_only_to_roles_that_may_use_them(as_role, fleet, role):
    page = as_role(role).get("/nodes/n05").get_data(as_text=True)
    assert ("/nodes/n05/config" in page) == (role != "viewer")
    listing = as_role(role).get("/nodes/").get_data(as_text=True)
    assert ("/nodes/bulk" in listing) == (role in ("operator", "admin"))


# --- overview and list ---------------------------------------------------------------------------


def test_overview_counts_by_provider_board_and_firmware(as_role, fleet, db):
    node_store.enrol_node(db, "fresh")
    alert_store.evaluate_alerts(db)  # what `fleet upkeep` does every round; the page only reads
    page = as_role("viewer").get("/").get_data(as_text=True)
    counts = node_store.overview(db)
    assert counts["all"] == {"total": 13, "online": 11, "offline": 1, "new": 1, "alerting": 2}
    assert counts["board"]["heltec"]["total"] == 6 and counts["firmware"]["0.3.0"]["total"] == 6
    assert "<b>11</b> online" in page and "<b>2</b> alerting" in page
    assert "battery low" in page and "offline" in page  # newest alerts (n03 battery, n11 offline)


def ids_in(page: str) -> list[str]:
    import re

    return re.findall(r'name="ids" value="([^"]+)"', page)


def test_list_search_by_id_name_tag_and_location(as_role, fleet):
    client = as_role("operator")
    assert ids_in(client.get("/nodes/?q=n0").get_data(as_text=True))[:3] == ["n00", "n01", "n02"]
    assert ids_in(client.get("/nodes/?q=lamppost").get_data(as_text=True)) == ["n05"]
    assert ids_in(client.get("/nodes/?q=pilot").get_data(as_text=True)) == ["n05"]
    assert ids_in(client.get("/nodes/?q=Main+St").get_data(as_text=True)) == ["n05"]
    assert ids_in(client.get("/nodes/?q=%25").get_data(as_text=True)) == []  # LIKE is escaped


def test_list_filters(as_role, fleet, db):
    client = as_role("operator")
    alert_store.evaluate_alerts(db)  # `fleet upkeep`'s work; the list only reads the alerts table

    def ids(qs):
        return ids_in(client.get("/nodes/?" + qs).get_data(as_text=True))

    assert ids("board=heltec") == ["n00", "n01", "n02", "n03", "n04", "n05"]
    assert ids("firmware=0.2.0&board=heltec") == ["n01", "n03", "n05"]
    assert ids("battery=low") == ["n03"]
    assert ids("status=offline") == ["n11"]
    assert ids("status=alerting") == ["n03", "n11"]
    assert ids("seen=1h") == [f"n{i:02d}" for i in range(11)]
    assert ids("seen=24h&status=offline") == ["n11"]
    assert ids("tag=north") == ["n05"]
    assert ids("provider=mqtt&battery=ok&board=heltec") == ["n00", "n01", "n02", "n04", "n05"]


def test_list_bad_filter_is_a_clear_400(as_role, fleet):
    r = as_role("viewer").get("/nodes/?status=sleepy")
    assert r.status_code == 400 and "status &#39;sleepy&#39;" in r.get_data(as_text=True)
    assert as_role("viewer").get("/nodes/?sort=color").status_code == 400


def test_list_sort_and_pages(as_role, db):
    for i in range(120):
        node_store.enrol_node(db, f"p{i:03d}")
    client = as_role("viewer")
    page1 = client.get("/nodes/").get_data(as_text=True)
    assert "Page 1 of 3" in page1 and "p049" in page1 and "p050" not in page1
    page3 = client.get("/nodes/?page=3").get_data(as_text=True)
    assert "p119" in page3 and "p099" not in page3
    desc = client.get("/nodes/?sort=name&dir=desc").get_data(as_text=True)
    assert desc.index("p119") < desc.index("p118")


def test_list_sort_by_battery_puts_unknown_last(as_role, fleet, db):
    node_store.enrol_node(db, "aaa")
    page = as_role("operator").get("/nodes/?sort=battery").get_data(as_text=True)
    got = ids_in(page)
    assert got[0] == "n03" and got[-1] == "aaa"


# --- bulk actions --------------------------------------------------------------------------------


def test_bulk_tag_selected_and_matching(as_role, fleet, db, form_token):
    client = as_role("operator")
    token = form_token(client, "/nodes/")
    r = client.post("/nodes/bulk", data={"csrf_token": token, "action": "tag", "bulk_tag": "east",
                                         "ids": ["n01", "n02"], "scope": "selected"})
    assert r.status_code == 303
    assert node_store.get_node(db, "n01")["tags"] == ["east"]
    # All matching a filter: the heltec boards, across pages if need be.
    client.post("/nodes/bulk", data={"csrf_token": token, "action": "tag", "bulk_tag": "heltec-run",
                                     "scope": "matching", "board": "heltec"})
    tagged = {n["id"] for n in node_store.list_nodes(db) if "heltec-run" in n["tags"]}
    assert tagged == {"n00", "n01", "n02", "n03", "n04", "n05"}
    assert node_store.get_node(db, "n05")["tags"] == ["north", "pilot", "heltec-run"]
    r = client.post("/nodes/bulk", data={"csrf_token": token, "action": "untag", "bulk_tag": "east",
                                         "scope": "matching"}, follow_redirects=True)
    assert "removed from 2 of 12 nodes" in r.get_data(as_text=True)
    assert node_store.get_node(db, "n01")["tags"] == ["heltec-run"]
    actions = [e["action"] for e in audit_store.audit_log(db, actor="operator-user")]
    assert actions[:3] == ["bulk.untag", "bulk.tag", "bulk.tag"]


def test_bulk_refused_for_technician_and_without_csrf(as_role, fleet, db, form_token):
    tech = as_role("technician")
    r = tech.post("/nodes/bulk", data={"csrf_token": form_token(tech, "/nodes/"),
                                       "action": "tag", "bulk_tag": "x", "ids": ["n01"]})
    assert r.status_code == 403
    op = as_role("operator")
    r = op.post("/nodes/bulk", data={"action": "tag", "bulk_tag": "x", "ids": ["n01"]})
    assert r.status_code == 400
    assert node_store.get_node(db, "n01")["tags"] == []


def test_bulk_tag_is_validated(as_role, fleet, db, form_token):
    client = as_role("operator")
    token = form_token(client, "/nodes/")
    for bad in ("", "a,b", "x" * 33, "tab\there"):
        r = client.post("/nodes/bulk", data={"csrf_token": token, "action": "tag", "bulk_tag": bad,
                                             "ids": ["n01"]}, follow_redirects=True)
        assert "Not tagged" in r.get_data(as_text=True)
    assert node_store.get_node(db, "n01")["tags"] == []


def test_bulk_command_through_a_real_broker(mosquitto, fleet, settings, db, form_token):
    app = create_app({"TESTING": True, "SECRET_KEY": "t",
                      "SETTINGS": dataclasses.replace(settings, mqtt_port=mosquitto.port)})
    auth.create_user(db, "op", PASSWORD, "operator")
    client = login(app.test_client(), form_token, "op")
    token = form_token(client, "/nodes/")
    r = client.post("/nodes/bulk", data={"csrf_token": token, "action": "command",
                                         "command": "set_interval", "arg": "120",
                                         "ids": ["n01", "n02", "n03"]}, follow_redirects=True)
    assert "Command set_interval sent to 3 of 3 nodes" in r.get_data(as_text=True)
    for node in ("n01", "n02", "n03"):
        (c,) = command_store.list_commands(db, node)
        assert c["sent_at"] is not None and c["arg"] == 120 and c["created_by"] == "op"
    r = client.post("/nodes/bulk", data={"csrf_token": token, "action": "command",
                                         "command": "set_interval", "arg": "0", "ids": ["n04"]},
                    follow_redirects=True)
    assert "outside 1..86400" in r.get_data(as_text=True)
    assert command_store.list_commands(db, "n04") == []


# --- XSS -----------------------------------------------------------------------------------------


def test_names_tags_and_locations_are_escaped_everywhere(as_role, fleet, db, form_token):
    client = as_role("technician")
    token = form_token(client, "/nodes/n05")
    client.post("/nodes/n05/edit", data={"csrf_token": token, "name": XSS,
                                         "tags": "<script>alert(2)</script>, ok"})
    client.post("/nodes/n05/place", data={"csrf_token": token, "location": XSS,
                                          "lat": "52.5", "lon": "13.4"})
    node = node_store.get_node(db, "n05")
    assert node["name"] == XSS and node["tags"] == ["<script>alert(2)</script>", "ok"]
    for path in ("/", "/nodes/", "/nodes/n05", "/map", "/nodes/?q=%3Cimg"):
        page = client.get(path).get_data(as_text=True)
        assert "<img src=x" not in page and "<script>alert" not in page, path
    page = client.get("/nodes/n05").get_data(as_text=True)
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    admin_page = as_role("admin").get("/admin/audit").get_data(as_text=True)
    assert "<img src=x" not in admin_page


def test_pages_forbid_inline_scripts_and_framing(as_role, fleet):
    r = as_role("viewer").get("/nodes/n05")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    page = r.get_data(as_text=True)
    # Nothing on the page would need 'unsafe-inline'.
    assert "<script>" not in page and " style=" not in page and " onclick=" not in page


# --- node page forms -----------------------------------------------------------------------------


def test_edit_and_place_validation(as_role, fleet, db, form_token):
    client = as_role("technician")
    token = form_token(client, "/nodes/n01")

    def post(path, **data):
        return client.post(path, data=dict(data, csrf_token=token),
                           follow_redirects=True).get_data(as_text=True)

    assert "at most 64" in post("/nodes/n01/edit", name="x" * 65)
    assert "give both latitude and longitude" in post("/nodes/n01/place", lat="52.1")
    assert "lat must be within -90..90" in post("/nodes/n01/place", lat="91", lon="0")
    assert "is not a number" in post("/nodes/n01/place", lat="north", lon="0")
    assert "lon must be within" in post("/nodes/n01/place", lat="1", lon="nan")
    assert node_store.node_place(db, "n01") == {"lat": None, "lon": None, "location": None}
    assert "Position saved" in post("/nodes/n01/place", lat="52.1", lon="13.2", location="Pole 7")
    assert node_store.node_place(db, "n01") == {"lat": 52.1, "lon": 13.2, "location": "Pole 7"}
    assert audit_store.audit_log(db, target="n01")[0]["action"] == "node.place"


def test_viewer_cannot_edit_or_place(as_role, fleet, db, form_token):
    client = as_role("viewer")
    token = form_token(client, "/nodes/")
    for path in ("/nodes/n01/edit", "/nodes/n01/place", "/nodes/n01/config"):
        r = client.post(path, data={"csrf_token": token, "name": "x", "lat": "1", "lon": "1",
                                    "interval": "60"})
        assert r.status_code == 403, path
    assert node_store.get_node(db, "n01")["name"] is None
    assert command_store.list_commands(db, "n01") == []


def test_config_is_validated_with_the_firmware_rules(as_role, fleet, db, form_token):
    client = as_role("technician")
    token = form_token(client, "/nodes/n01")

    def post(**data):
        return client.post("/nodes/n01/config", data=dict(data, csrf_token=token),
                           follow_redirects=True).get_data(as_text=True)

    assert "set interval, status interval or both" in post()
    assert "interval must be a whole number 1..86400 s, got 0" in post(interval="0")
    # The node refuses a status interval under 10 s (firmware/polylink/commands.py).
    assert "status_interval must be a whole number 10..86400 s, got 5" in post(
        status_interval="5")
    assert "not a whole number" in post(interval="1.5")
    assert command_store.list_commands(db, "n01") == []
    # Valid, but the test settings point at a closed broker port: recorded, not sent.
    assert "Config not sent: cannot reach the broker" in post(interval="120")


def test_config_goes_out_as_a_config_frame(mosquitto, fleet, settings, db, form_token):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("pl/v1/n01/down", qos=1)
    sub.loop_start()
    try:
        time.sleep(0.3)
        app = create_app({"TESTING": True, "SECRET_KEY": "t",
                          "SETTINGS": dataclasses.replace(settings, mqtt_port=mosquitto.port)})
        auth.create_user(db, "tech", PASSWORD, "technician")
        client = login(app.test_client(), form_token, "tech")
        r = client.post("/nodes/n01/config", data={
            "csrf_token": form_token(client, "/nodes/n01"), "interval": "120",
            "status_interval": "600"}, follow_redirects=True)
        assert "Config sent" in r.get_data(as_text=True)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    mtype, _seq, _ts, body = proto.decode(got[0])
    assert mtype == proto.CONFIG and body["interval"] == 120 and body["status_interval"] == 600


# --- alerts --------------------------------------------------------------------------------------


def test_alerts_open_and_resolve_themselves(db, fleet):
    now = time.time()
    alert_store.evaluate_alerts(db, now)
    kinds = {(a["node_id"], a["kind"]) for a in alert_store.list_alerts(db)}
    assert kinds == {("n03", "battery_low"), ("n11", "offline")}
    # Re-evaluating opens nothing twice.
    assert sum(alert_store.evaluate_alerts(db, now).values()) == 0
    # A boot loop: boots 1 -> 4 within the hour; bad frames from n07.
    ing = Ingest(db)
    for seq, boots in ((2, 2), (3, 3), (4, 4)):
        status = {"fw": "0.2.0", "boots": boots, "uptime": 3}
        ing.add("pl/v1/n02/up", frame(proto.STATUS, seq, status), now)
    ing.add("pl/v1/n07/up", b"\x01", now)
    # n03's battery recovers above the hysteresis; n11 reports again.
    ing.add("pl/v1/n03/up", frame(proto.TELEMETRY, 5, [(2, 0, 3.6)]), now)
    ing.add("pl/v1/n11/up", frame(proto.TELEMETRY, 5, [(0, 0, 1.0)]), now)
    ing.flush()
    alert_store.evaluate_alerts(db, now + 1)
    kinds = {(a["node_id"], a["kind"]) for a in alert_store.list_alerts(db)}
    assert kinds == {("n02", "boot_loop"), ("n07", "bad_frames")}
    resolved = [a for a in alert_store.list_alerts(db, unresolved=False)
                if a["state"] == "resolved"]
    assert {a["resolved_by"] for a in resolved} == {"auto"} and len(resolved) == 2
    # An hour later with no new bad frames or boots, those clear too.
    alert_store.evaluate_alerts(db, now + 3700)
    assert {a["kind"] for a in alert_store.list_alerts(db)} == {"offline"}  # ... but all went quiet


def test_update_failed_alerts_come_from_outside(db, fleet):
    assert alert_store.open_alert(db, "n01", "update_failed", "hash mismatch") is True
    assert alert_store.open_alert(db, "n01", "update_failed", "again") is False
    with pytest.raises(BadFilter):
        alert_store.open_alert(db, "n01", "gremlins", "")


def test_ack_and_resolve_from_the_node_page(as_role, fleet, db, form_token):
    alert_store.evaluate_alerts(db)
    (alert,) = alert_store.list_alerts(db, node_id="n03")
    viewer = as_role("viewer")
    page = viewer.get("/nodes/n03").get_data(as_text=True)
    assert "battery low" in page and "Acknowledge" not in page
    r = viewer.post(f"/alerts/{alert['id']}/ack", data={"csrf_token": form_token(viewer, "/")})
    assert r.status_code == 403
    tech = as_role("technician")
    token = form_token(tech, "/nodes/n03")
    assert tech.post(f"/alerts/{alert['id']}/ack", data={}).status_code == 400  # no CSRF
    r = tech.post(f"/alerts/{alert['id']}/ack", data={"csrf_token": token, "next": "/nodes/n03"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/nodes/n03")
    page = tech.get("/nodes/n03").get_data(as_text=True)
    assert "acknowledged by technician-user" in page
    r = tech.post(f"/alerts/{alert['id']}/resolve", data={"csrf_token": token,
                                                          "next": "//evil.example/"})
    assert r.headers["Location"].endswith("/alerts/")
    assert alert_store.list_alerts(db, node_id="n03") == []
    r = tech.post(f"/alerts/{alert['id']}/resolve", data={"csrf_token": token},
                  follow_redirects=True)
    assert "already resolved" in r.get_data(as_text=True)
    assert [e["action"] for e in audit_store.audit_log(db, target="n03")][:2] == ["alert.resolve",
                                                                             "alert.ack"]


# --- map, charts, live ---------------------------------------------------------------------------


def test_map_plots_positions_without_tiles(as_role, fleet):
    page = as_role("viewer").get("/map").get_data(as_text=True)
    assert "2 of 12 nodes have a position" in page
    assert page.count("<circle") == 2 and "/nodes/n05" in page and "http" not in page.split(
        "<svg")[1].split("</svg>")[0].replace('http://www.w3.org', '')


def test_map_bins_many_nodes(as_role, db, monkeypatch):
    from fleet.web import overview

    monkeypatch.setattr(overview, "MAP_POINTS", 10)
    for i in range(30):
        node_store.enrol_node(db, f"m{i}")
        node_store.set_place(db, f"m{i}", 50 + (i % 3) * 0.01, 8 + (i // 3) * 0.001, None)
    alert_store.open_alert(db, "m4", "update_failed", "x")
    page = as_role("viewer").get("/map").get_data(as_text=True)
    assert "30 of 30 nodes have a position" in page and "circles count nodes" in page
    import re

    counts = [int(n) for n in re.findall(r"<title>(\d+) nodes, worst", page)]
    assert sum(counts) == 30 and len(counts) < 30
    assert page.count('class="alerting"><title>') == 1  # m4's cell, and only that one


def test_chart_ranges_and_bad_requests(as_role, fleet):
    client = as_role("viewer")
    for rng in ("1h", "6h", "24h", "7d", "30d"):
        assert client.get(f"/nodes/n05/chart.svg?q=0&range={rng}").status_code == 200
    assert client.get("/nodes/n05/chart.svg?q=0&range=1y").status_code == 400
    assert client.get("/nodes/n05/chart.svg?s=password").status_code == 400
    assert client.get("/nodes/n05/chart.svg").status_code == 400
    assert client.get("/nodes/ghost/chart.svg?q=0").status_code == 404
    empty = client.get("/nodes/n05/chart.svg?q=7").get_data(as_text=True)
    assert "PM2.5 in µg/m³" in empty and "No data in the last 24h" in empty


def test_live_stream_sends_state_and_changes(app, as_role, fleet, db):
    app.config["LIVE_SECONDS"] = 2.5
    client = as_role("viewer")
    r = client.get("/nodes/n05/live", buffered=False)
    assert r.mimetype == "text/event-stream"
    chunks = r.response
    assert next(chunks).decode().startswith("retry: ")
    first = next(chunks).decode()
    assert first.startswith("event: state\ndata: ")
    state = json.loads(first.split("data: ", 1)[1])
    assert state["values"]["q0-0"] == "25.0 °C" and state["status"] == "online"
    Ingest_ = Ingest(db)
    Ingest_.add("pl/v1/n05/up", frame(proto.TELEMETRY, 9, [(0, 0, 26.5)]), time.time())
    Ingest_.flush()
    changed = next(chunks).decode()
    assert json.loads(changed.split("data: ", 1)[1])["values"]["q0-0"] == "26.5 °C"
    rest = b"".join(chunks)  # the stream ends by itself after LIVE_SECONDS
    assert b"event: state" not in rest
    r.close()


def test_live_stream_ends_at_logout(app, as_role, fleet, db, form_token):
    app.config["LIVE_SECONDS"] = 30
    client = as_role("viewer")
    r = client.get("/nodes/n05/live", buffered=False)
    chunks = r.response
    assert next(chunks).decode().startswith("retry: ")
    assert next(chunks).decode().startswith("event: state")
    # Logged out in another tab (or on another device: a logout ends every session of the user).
    other = as_role("viewer")
    other.post("/auth/logout", data={"csrf_token": form_token(other, "/nodes/")})
    started = time.monotonic()
    assert next(chunks).decode() == "event: gone\ndata: {}\n\n"
    assert time.monotonic() - started < 15  # the next read, not the stream's 30 s
    assert b"".join(chunks) == b""
    r.close()


def test_live_streams_are_bounded(app, as_role, fleet):
    app.config["LIVE_SECONDS"] = 5
    client = as_role("viewer")
    slots = app.extensions["polylink_live_slots"]
    held = [slots.acquire(blocking=False) for _ in range(4)]
    try:
        assert all(held)
        r = client.get("/nodes/n05/live")
        body = r.get_data(as_text=True)
        assert body.startswith("retry: 9000") and "busy" in body and "event:" not in body
    finally:
        for _ in held:
            slots.release()


def test_cli_alerts_check(runner, db, fleet):
    from fleet.cli import cli

    r = runner.invoke(cli, ["alerts", "check"])
    assert r.exit_code == 0, r.output
    assert "battery_low 1" in r.output and "offline 1" in r.output
    assert "n03" in r.output and "battery 3.2 V" in r.output
    r = runner.invoke(cli, ["alerts", "check"])
    assert "battery_low 0" in r.output and "n03" in r.output  # still open, not opened twice


def test_alerts_api(client, db, fleet):
    alert_store.evaluate_alerts(db)
    viewer = {"Authorization": "Bearer " + auth.create_token(db, "grafana", "viewer")}
    tech = {"Authorization": "Bearer " + auth.create_token(db, "field", "technician")}
    body = client.get("/api/v1/alerts", headers=viewer).get_json()
    assert {(a["node_id"], a["kind"], a["state"]) for a in body["alerts"]} == {
        ("n03", "battery_low", "open"), ("n11", "offline", "open")}
    (alert,) = client.get("/api/v1/alerts?node=n03", headers=viewer).get_json()["alerts"]
    assert alert["detail"] == "battery 3.2 V" and alert["opened"].endswith("Z")
    assert client.get("/api/v1/alerts?node=ghost", headers=viewer).status_code == 404
    assert client.get("/api/v1/alerts?limit=0", headers=viewer).status_code == 400
    r = client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=viewer)
    assert r.status_code == 403
    r = client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=tech)
    assert r.status_code == 200 and r.get_json()["acked_by"] == "token:field"
    r = client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=tech)
    assert r.get_json()["state"] == "resolved"
    r = client.post(f"/api/v1/alerts/{alert['id']}/resolve", headers=tech)
    assert r.status_code == 409 and "already resolved" in r.get_json()["error"]
    assert client.post("/api/v1/alerts/999/ack", headers=tech).status_code == 404
    assert client.post("/api/v1/alerts/1/snooze", headers=tech).status_code == 404
    everything = client.get("/api/v1/alerts?all=1", headers=viewer).get_json()["alerts"]
    assert len(everything) == 2


# --- OTA: rollouts on the overview, updates on the node page, rollout as a bulk action -----------


def test_rollout_from_the_node_list_and_update_failed_alerts(app, as_role, db, form_token):
    from rollout_nodes import Nodes, _release

    from fleet.ota import rollouts

    _release(db, "0.4.0")
    ids = [f"r-{i}" for i in range(5)]
    nodes = Nodes(db, ids, bad={"0.4.0"})
    tech = as_role("technician")
    assert 'value="rollout"' not in tech.get("/nodes/").get_data(as_text=True)
    op = as_role("operator")
    listing = op.get("/nodes/?q=r-").get_data(as_text=True)
    assert 'value="rollout"' in listing and 'value="new:0.4.0"' in listing
    token = form_token(op, "/nodes/")
    r = op.post("/nodes/bulk", data={"csrf_token": token, "action": "rollout",
                                     "release": "0.9.9", "ids": ids[:2]}, follow_redirects=True)
    assert "No rollout started: no release &#39;0.9.9&#39;" in r.get_data(as_text=True)
    r = op.post("/nodes/bulk", data={"csrf_token": token, "action": "rollout",
                                     "release": "0.4.0", "scope": "matching", "q": "r-"})
    assert r.status_code == 303 and "/updates/rollouts/" in r.headers["Location"]
    (rollout,) = ota_store.rollouts_in_progress(db)
    assert rollout["release"] == "0.4.0" and rollout["total"] == 5
    assert audit_store.audit_log(db, actor="operator-user")[0]["action"] == "rollout.create"
    page = op.get("/").get_data(as_text=True)
    assert "Rollouts in progress" in page and "0.4.0" in page and "1 of 4" in page
    # The release crash-loops: the first stage's node rolls back, the rollout pauses and an
    # update_failed alert opens for that node.
    for _ in range(3):
        rollouts.tick(db, nodes.send, "http://fleet")
        nodes.deliver()
    alert_store.evaluate_alerts(db)
    failed = [a for a in alert_store.list_alerts(db) if a["kind"] == "update_failed"]
    assert len(failed) >= 1
    node = failed[0]["node_id"]
    assert failed[0]["detail"].startswith("update to 0.4.0 rolled back")
    page = op.get(f"/nodes/{node}").get_data(as_text=True)
    assert "update failed" in page and "rolled back" in page and "crash loop" in page
    assert f"/updates/rollouts/{rollout['id']}" in page
    assert "paused" in op.get("/").get_data(as_text=True)
    # A fixed release reaches that node: the alert resolves itself.
    rollouts.act(db, rollout["id"], "abort")
    _release(db, "0.4.1")
    rid = rollouts.create(db, "0.4.1", {"nodes": [node]},
                          [{"percent": 100, "soak": 0}])
    for _ in range(3):
        rollouts.tick(db, nodes.send, "http://fleet")
        nodes.deliver()
    assert ota_store.get_rollout(db, rid)["state"] == "done"
    alert_store.evaluate_alerts(db)
    assert [a for a in alert_store.list_alerts(db) if a["kind"] == "update_failed"] == []


def test_node_page_without_updates(as_role, fleet):
    page = as_role("viewer").get("/nodes/n01").get_data(as_text=True)
    assert "No updates yet." in page


def test_lora_radio_quality_charts(as_role, fleet, db):
    viewer = as_role("viewer")
    assert "s=lora_snr" not in viewer.get("/nodes/n01").get_data(as_text=True)
    now = time.time()
    with transaction(db) as conn:
        conn.executemany(
            "INSERT INTO receptions (node_id, seq, provider, received_at, gateway, rssi, snr)"
            " VALUES ('n01', ?, ?, ?, ?, ?, ?)",
            [(i, "ttn" if i % 2 else "chirpstack", now - 3000 + 60 * i, f"gw-{i % 2}",
              -100.0 - i, 7.5 - i / 10) for i in range(40)])
    page = viewer.get("/nodes/n01").get_data(as_text=True)
    assert "s=lora_rssi" in page and "s=lora_snr" in page
    svg = viewer.get("/nodes/n01/chart.svg?s=lora_snr&range=1h").get_data(as_text=True)
    assert "LoRa SNR, all gateways in dB" in svg and "<polyline" in svg
    assert ">8<" in svg and ">2<" in svg  # round values around 3.6 .. 7.5 dB
    assert viewer.get("/nodes/n01/chart.svg?s=lora_gain").status_code == 400


def test_bulk_add_to_an_unfinished_rollout(app, as_role, db, form_token):
    from rollout_nodes import Nodes, _release

    from fleet.ota import rollouts

    _release(db, "0.4.0")
    _release(db, "0.5.0")
    ids = [f"j-{i}" for i in range(5)]
    Nodes(db, ids)
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET firmware_version = '0.4.0' WHERE id = 'j-4'")
    rid = rollouts.create(db, "0.4.0", {"nodes": ids[:1]}, [{"percent": 100, "soak": 600}])
    done = rollouts.create(db, "0.5.0", {"nodes": ["j-4"]}, [{"percent": 100, "soak": 0}])
    rollouts.act(db, done, "abort")
    op = as_role("operator")
    listing = op.get("/nodes/?q=j-").get_data(as_text=True)
    # Open rollouts are offered under their own release; finished ones are not.
    assert 'value="new:0.4.0"' in listing and f'value="rollout:{rid}"' in listing
    assert 'value="new:0.5.0"' in listing and f'value="rollout:{done}"' not in listing
    token = form_token(op, "/nodes/")
    r = op.post("/nodes/bulk", data={"csrf_token": token, "action": "rollout",
                                     "rollout_to": f"rollout:{rid}", "ids": ids})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/updates/rollouts/{rid}")
    page = op.get(r.headers["Location"]).get_data(as_text=True)
    assert (f"3 of 5 nodes added to rollout {rid} of 0.4.0. Skipped: 1 already in it, "
            "1 already on 0.4.0.") in page
    assert len(ota_store.rollout_nodes(db, rid)) == 4
    assert audit_store.audit_log(db, actor="operator-user")[0]["action"] == "rollout.add-nodes"
    # A finished rollout, or a made-up id, is refused with a message and changes nothing.
    for choice, text in ((f"rollout:{done}", "is aborted"), ("rollout:x", "not a rollout id")):
        r = op.post("/nodes/bulk", data={"csrf_token": token, "action": "rollout",
                                         "rollout_to": choice, "ids": ids},
                    follow_redirects=True)
        assert "No nodes added:" in r.get_data(as_text=True) and text in r.get_data(as_text=True)
    assert len(ota_store.rollout_nodes(db, done)) == 1
    # "new:" still starts a rollout (here refused: the nodes are in the open one).
    r = op.post("/nodes/bulk", data={"csrf_token": token, "action": "rollout",
                                     "rollout_to": "new:0.5.0", "ids": ids[1:3]},
                follow_redirects=True)
    assert "in another unfinished rollout" in r.get_data(as_text=True)
    # Without CSRF, or as a technician (no bulk area), nothing is added.
    r = op.post("/nodes/bulk", data={"action": "rollout", "rollout_to": f"rollout:{rid}",
                                     "ids": ["j-4"]})
    assert r.status_code == 400
    tech = as_role("technician")
    r = tech.post("/nodes/bulk", data={"csrf_token": form_token(tech, "/nodes/"),
                                       "action": "rollout", "rollout_to": f"rollout:{rid}",
                                       "ids": ids})
    assert r.status_code == 403 and len(ota_store.rollout_nodes(db, rid)) == 4


# --- config: every field the node accepts by downlink, with the node's own limits ----------------


class ConfigNode:
    """Just enough of a node for the firmware's Commands to apply a CONFIG and answer it."""

    def __init__(self):
        self.out, self.bad_downlinks = [], 0
        self.interval, self.status_interval = 60, 300

    def emit(self, mtype, body, ts=None):
        self.out.append((mtype, body))

    def set_interval(self, s):
        self.interval = s

    def set_status_interval(self, s):
        self.status_interval = s


@pytest.mark.parametrize("name", ["interval", "status_interval"])
def test_the_fleet_refuses_exactly_what_the_node_refuses(name):
    from polylink import commands as fw_commands

    from fleet.nodes import commands as downlink

    assert set(downlink.CONFIG_FIELDS) == {f[1] for f in proto._SCHEMA[proto.CONFIG]} - {"cid"}
    for value in (-1, 0, 1, 2, 9, 10, 11, 3600, 86399, 86400, 86401, 10**9, True, 1.5, "60"):
        node = ConfigNode()
        code = fw_commands.Commands(node)._config({name: value})[0]
        try:
            downlink.check_config({name: value})
            fleet_ok = True
        except downlink.BadCommand:
            fleet_ok = False
        assert fleet_ok == (code == fw_commands.OK), (name, value)
    with pytest.raises(downlink.BadCommand, match="unknown config field.*queue_max"):
        downlink.check_config({"queue_max": 100})
    with pytest.raises(downlink.BadCommand, match="set interval, status interval or both"):
        downlink.check_config({"interval": None})


def test_config_over_the_api_confirmed_by_the_node(mosquitto, fleet, settings, db, app,
                                                    form_token):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from polylink import commands as fw_commands

    got = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("pl/v1/n01/down", qos=1)
    sub.loop_start()
    live = create_app({"TESTING": True, "SECRET_KEY": "t",
                       "SETTINGS": dataclasses.replace(settings, mqtt_port=mosquitto.port)})
    client = live.test_client()
    tech = {"Authorization": "Bearer " + auth.create_token(db, "tech", role="technician")}
    viewer = {"Authorization": "Bearer " + auth.create_token(db, "view", role="viewer")}
    try:
        assert client.post("/api/v1/nodes/n01/config", headers=viewer,
                           json={"interval": 120}).status_code == 403
        for body, text in (({"interval": 0}, "interval must be a whole number 1..86400 s"),
                           ({"status_interval": 5}, "status_interval must be"),
                           ({"interval": "60"}, "interval must be"),
                           ({"queue_max": 5}, "unknown config field"),
                           ({}, "set interval, status interval or both"),
                           ([60], "body must be a JSON object")):
            r = client.post("/api/v1/nodes/n01/config", headers=tech, json=body)
            assert r.status_code == 400 and text in r.json["error"], (body, r.json)
        assert client.post("/api/v1/nodes/nope/config", headers=tech,
                           json={"interval": 60}).status_code == 404
        assert command_store.list_commands(db, "n01") == []
        r = client.post("/api/v1/nodes/n01/config", headers=tech,
                        json={"interval": 120, "status_interval": 600})
        assert r.status_code == 202, r.json
        assert r.json["config"] == {"interval": 120, "status_interval": 600}
        cid = r.json["id"]
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    # The firmware's own handler applies the frame from the broker and answers with a RESULT,
    # which comes back through the ingest.
    node = ConfigNode()
    fw_commands.Commands(node).handle(got[0])
    assert (node.interval, node.status_interval) == (120, 600)
    (mtype, result), = node.out
    assert mtype == proto.RESULT and result["cid"] == cid and result["code"] == fw_commands.OK
    ing = Ingest(db)
    ing.add("pl/v1/n01/up", frame(proto.RESULT, 50, result), time.time())
    ing.flush()
    c = client.get(r.json["url"], headers=tech).json
    assert c["state"] == "done" and c["config"] == {"interval": 120, "status_interval": 600}
    detail = json.loads(audit_store.audit_log(db, actor="token:tech")[0]["detail"])
    assert detail == {"cid": cid, "cmd": "config", "interval": 120, "status_interval": 600}
    # The node page shows the confirmed config and fills the form with it.
    auth.create_user(db, "techie", PASSWORD, "technician")
    page = login(app.test_client(), form_token, "techie").get("/nodes/n01").get_data(
        as_text=True)
    assert "Last config: interval 120 s, status interval 600 s" in page
    assert "ok: config applied" in page
    assert 'name="status_interval" type="number" inputmode="numeric" min="10" max="86400" ' \
           'value="600"' in page


def test_config_from_the_cli_is_checked_first(runner, fleet, db, monkeypatch):
    from fleet.cli import cli

    monkeypatch.setenv("MQTT_PORT", "1")  # nothing listens there: recorded, not sent
    r = runner.invoke(cli, ["command", "config", "n01", "--status-interval", "5"])
    assert r.exit_code == 1 and "status_interval must be a whole number 10..86400 s" in r.output
    r = runner.invoke(cli, ["command", "config", "n01"])
    assert r.exit_code == 1 and "set interval, status interval or both" in r.output
    assert command_store.list_commands(db, "n01") == []
    r = runner.invoke(cli, ["command", "config", "n01", "--interval", "30"])
    assert r.exit_code == 1 and "cannot reach the broker" in r.output  # port 1: recorded only
    (c,) = command_store.list_commands(db, "n01")
    assert c["cmd"] == "config" and c["body"] == {"interval": 30} and c["created_by"] == "cli"


def test_a_config_sent_before_schema_13_still_shows_its_interval(db, fleet):
    with transaction(db) as conn:
        conn.execute("INSERT INTO commands (node_id, cmd, arg, created, result_code, result_at)"
                     " VALUES ('n02', 'config', 90, 1, 0, 2)")
    assert command_store.last_config(db, "n02")["body"] == {"interval": 90}
    assert command_store.last_config(db, "n03") is None


# --- compression ---------------------------------------------------------------------------------


def _decoded(r) -> bytes:
    """The body of a response, decoded as its Content-Encoding says."""
    import gzip
    import zlib

    import brotli

    try:
        from compression import zstd  # Python 3.14
    except ImportError:
        from backports import zstd

    body, coding = r.get_data(), r.headers.get("Content-Encoding")
    return {"gzip": gzip.decompress, "br": brotli.decompress, "deflate": zlib.decompress,
            "zstd": zstd.decompress, None: bytes}[coding](body)


def test_style_script_and_charts_are_compressed_pages_and_json_are_not(as_role, fleet, app, db):
    """Slow links get small assets; nothing holding a secret is compressed (BREACH)."""
    from pathlib import Path

    client = as_role("technician")
    static = Path(app.static_folder)
    for accept in ("gzip, deflate, br, zstd", "gzip, deflate"):  # Chromium on HTTPS; on HTTP
        for url, path in (("/static/style.css", static / "style.css"),
                          ("/static/node.js", static / "node.js")):
            r = client.get(url, headers={"Accept-Encoding": accept})
            assert r.status_code == 200 and r.headers.get("Content-Encoding") in accept, url
            assert _decoded(r) == path.read_bytes()
            assert len(r.get_data()) < path.stat().st_size / 2, (url, len(r.get_data()))
        r = client.get("/nodes/n05/chart.svg?q=0&i=0&range=7d",
                       headers={"Accept-Encoding": accept})
        assert r.headers.get("Content-Encoding") in accept
        assert "Accept-Encoding" in r.headers["Vary"]
        assert _decoded(r).startswith(b"<svg")
    # A client that does not ask for it gets the plain bytes.
    plain = client.get("/nodes/n05/chart.svg?q=0&i=0&range=7d")
    assert "Content-Encoding" not in plain.headers and plain.get_data().startswith(b"<svg")
    # HTML pages (CSRF tokens next to reflected search text) and JSON stay uncompressed.
    gz = {"Accept-Encoding": "gzip, deflate, br, zstd"}
    for url in ("/nodes/?q=" + "x" * 600, "/nodes/n05", "/"):
        r = client.get(url, headers=gz)
        assert r.status_code == 200 and "Content-Encoding" not in r.headers, url
        assert len(r.get_data()) > 500, "big enough that it would have been compressed"
    token = auth.create_token(db, "reader", "viewer")
    r = app.test_client().get("/api/v1/nodes", headers={**gz, "Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and "Content-Encoding" not in r.headers


def test_error_pages_are_the_sites_own_and_fit_a_phone(as_role):
    client = as_role("viewer")
    page = client.get("/nodes/ghost")
    assert page.status_code == 404 and 'name="viewport"' in page.get_data(as_text=True)
    wrong = client.post("/map")  # werkzeug's page had no viewport: 980 px wide on a phone
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]
    assert 'name="viewport"' in wrong.get_data(as_text=True)
    assert client.get("/api/v1/ghost").is_json


def test_times_wrap_between_date_and_clock_never_inside_the_date():
    from fleet.web.filters import when

    assert when(None) == "-"
    assert str(when(0)) == ('<time datetime="1970-01-01T00:00:00.000Z"><span>1970-01-01</span> '
                            '<span>00:00:00</span></time>')


def test_node_page_shows_frames_the_node_lost(as_role, fleet, db):
    ing = Ingest(db)
    ing.add("pl/v1/n04/up", frame(proto.STATUS, 2, {"fw": "0.3.0", "uptime": 99, "lost": 7}),
            time.time())
    ing.flush()
    client = as_role("viewer")
    page = client.get("/nodes/n04").get_data(as_text=True)
    assert "Frames lost since boot</dt><dd>7 <strong>(not encoded or not queued" in page
    assert "Frames lost since boot</dt><dd>-</dd>" in client.get("/nodes/n05").get_data(
        as_text=True)
