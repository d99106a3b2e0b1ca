"""Every /api/v1 endpoint, its bearer-token check, and its JSON errors (4xx, never 500)."""

import dataclasses
import queue
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from polylink import proto

from fleet import create_app
from fleet.ingest import Ingest
from fleet.store import telemetry as telemetry_store

READING = [(0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71)]


def frame(mtype, seq, body, ts=None) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, mtype, seq, body, ts)
    return bytes(buf[:n])


@pytest.fixture
def fleet(db):
    """Two nodes with telemetry, status and one bad frame, stored through the real ingest path."""
    ing = Ingest(db)
    for i in range(5):
        ing.add("pl/v1/n1/up", frame(proto.TELEMETRY, i, READING, ts=1_000 + 60 * i), 2_000.0)
    ing.add("pl/v1/n1/up", frame(proto.STATUS, 5, {"fw": "1.2.3", "uptime": 9,
                                                   "micropython": "1.24.1"}), 2_001.0)
    ing.add("pl/v1/n1/up", b"\x01\x02", 2_002.0)
    ing.add("pl/v1/n2/conn", b"1", 2_003.0)
    ing.flush()
    return db


def test_every_endpoint_needs_a_valid_token(client, fleet):
    for path in ("/api/v1/nodes", "/api/v1/nodes/n1", "/api/v1/nodes/n1/telemetry",
                 "/api/v1/nodes/n1/bad-frames", "/api/v1/nodes/n1/commands/1"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert "bearer token" in r.get_json()["error"]
    r = client.post("/api/v1/nodes/n1/commands", json={"command": "identify"})
    assert r.status_code == 401


def test_list_nodes(client, fleet, auth_headers):
    r = client.get("/api/v1/nodes", headers=auth_headers)
    assert r.status_code == 200
    nodes = {n["id"]: n for n in r.get_json()["nodes"]}
    assert set(nodes) == {"n1", "n2"}
    n1 = nodes["n1"]
    assert n1["online"] is True and n1["firmware_version"] == "1.2.3"
    assert n1["micropython_version"] == "1.24.1"
    assert n1["provider"] == "mqtt" and n1["battery"] == 3.71
    assert n1["last_seen"].endswith("Z") and n1["bad_frames"] == 1
    assert nodes["n2"]["firmware_version"] is None and nodes["n2"]["micropython_version"] is None


def test_get_node_with_latest_values_as_senml(client, fleet, auth_headers):
    r = client.get("/api/v1/nodes/n1", headers=auth_headers)
    body = r.get_json()
    assert body["id"] == "n1" and body["uptime"] == 9 and body["micropython_version"] == "1.24.1"
    latest = body["latest"]
    assert latest[0]["bn"] == "urn:dev:polylink:n1:" and latest[0]["bt"] == 1_240
    assert [(x["n"], x["v"]) for x in latest] == [
        ("temperature", 21.5), ("humidity", 48.0), ("battery_voltage", 3.71)]


def test_telemetry_as_senml_with_filters(client, fleet, auth_headers):
    r = client.get("/api/v1/nodes/n1/telemetry", headers=auth_headers)
    assert r.status_code == 200 and r.mimetype == "application/senml+json"
    pack = r.get_json()
    assert len(pack) == 15 and pack[0]["bt"] == 1_000
    r = client.get("/api/v1/nodes/n1/telemetry?quantity=temperature&since=1060&until=1180",
                   headers=auth_headers)
    pack = r.get_json()
    assert [(p["n"], p.get("t", 0)) for p in pack] == [
        ("temperature", 0), ("temperature", 60), ("temperature", 120)]
    r = client.get("/api/v1/nodes/n1/telemetry?limit=2&quantity=2", headers=auth_headers)
    assert [p["n"] for p in r.get_json()] == ["battery_voltage"] * 2
    r = client.get("/api/v1/nodes/n1/telemetry?since=1970-01-01T00:20:00Z", headers=auth_headers)
    assert len(r.get_json()) == 3  # t >= 1200: the last frame's three readings


@pytest.mark.parametrize("query, needle", [
    ("since=yesterday", "since="),
    ("until=nan", "finite"),
    ("since=-5", "non-negative"),
    ("since=200&until=100", "after"),
    ("limit=0", "limit"),
    ("limit=many", "limit"),
    ("limit=100001", "limit"),
    ("quantity=warp_factor", "unknown quantity"),
])
def test_telemetry_rejects_bad_parameters(client, fleet, auth_headers, query, needle):
    r = client.get(f"/api/v1/nodes/n1/telemetry?{query}", headers=auth_headers)
    assert r.status_code == 400
    assert needle in r.get_json()["error"]


def test_bad_frames_endpoint(client, fleet, auth_headers):
    body = client.get("/api/v1/nodes/n1/bad-frames", headers=auth_headers).get_json()
    assert body["count"] == 1
    assert body["frames"][0]["payload_hex"] == "0102"
    assert "truncated" in body["frames"][0]["error"]


def test_unknown_node_and_route_are_json_404(client, fleet, auth_headers):
    for path in ("/api/v1/nodes/ghost", "/api/v1/nodes/ghost/telemetry",
                 "/api/v1/nodes/ghost/bad-frames", "/api/v1/nodes/ghost/commands/1",
                 "/api/v1/nodes/n1/commands/999", "/api/v1/nothing-here"):
        r = client.get(path, headers=auth_headers)
        assert r.status_code == 404, path
        assert r.get_json()["error"]
    r = client.post("/api/v1/nodes/ghost/commands", json={"command": "identify"},
                    headers=auth_headers)
    assert r.status_code == 404 and "ghost" in r.get_json()["error"]
    r = client.delete("/api/v1/nodes", headers=auth_headers)
    assert r.status_code == 405 and r.get_json()["error"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"data": "{not json", "content_type": "application/json"}, "JSON object"),
    ({"data": "command=reboot", "content_type": "application/x-www-form-urlencoded"},
     "JSON object"),
    ({"json": ["reboot"]}, "JSON object"),
    ({"json": {"command": 1}}, "must be a string"),
    ({"json": {}}, "must be a string"),
    ({"json": {"command": "selfdestruct"}}, "unknown command"),
    ({"json": {"command": "reboot", "arg": 5}}, "takes no arg"),
    ({"json": {"command": "set_interval"}}, "integer arg"),
    ({"json": {"command": "set_interval", "arg": "60"}}, "integer arg"),
    ({"json": {"command": "set_interval", "arg": True}}, "integer arg"),
    ({"json": {"command": "set_interval", "arg": 0}}, "outside"),
    ({"json": {"command": "identify", "colour": "red"}}, "unknown field"),
])
def test_bad_commands_get_clear_400s(client, fleet, auth_headers, kwargs, needle):
    r = client.post("/api/v1/nodes/n1/commands", headers=auth_headers, **kwargs)
    assert r.status_code == 400
    assert needle in r.get_json()["error"]


def test_command_when_the_broker_is_down_is_503(client, fleet, auth_headers):
    r = client.post("/api/v1/nodes/n1/commands", json={"command": "identify"},
                    headers=auth_headers)
    assert r.status_code == 503
    assert "broker" in r.get_json()["error"]


def test_command_reaches_the_node_and_its_result_comes_back(mosquitto, settings, fleet, token):
    settings = dataclasses.replace(settings, mqtt_port=mosquitto.port)
    client = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "t"}).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    received = queue.Queue()
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="n1")
    node.on_message = lambda c, u, m: received.put((m.topic, m.payload))
    node.connect(mosquitto.host, mosquitto.port)
    node.subscribe("pl/v1/n1/down", qos=1)
    node.loop_start()
    try:
        time.sleep(0.3)  # subscribed
        r = client.post("/api/v1/nodes/n1/commands", json={"command": "set_interval", "arg": 60},
                        headers=headers)
        assert r.status_code == 202
        cid = r.get_json()["id"]
        assert r.headers["Location"].endswith(f"/api/v1/nodes/n1/commands/{cid}")
        topic, payload = received.get(timeout=10)
        mtype, seq, ts, body = proto.decode(payload)
        assert (topic, mtype, body) == ("pl/v1/n1/down", proto.COMMAND,
                                        {"cid": cid, "cmd": 2, "arg": 60})
        state = client.get(f"/api/v1/nodes/n1/commands/{cid}", headers=headers).get_json()
        assert state["state"] == "sent" and state["result"] is None
        # The node answers; the ingest stores the result against the command.
        ing = Ingest(fleet)
        ing.add("pl/v1/n1/up", frame(proto.RESULT, 6, {"cid": cid, "code": 0, "value": 60}), 9.0)
        ing.flush()
        state = client.get(f"/api/v1/nodes/n1/commands/{cid}", headers=headers).get_json()
        assert state["state"] == "done"
        assert state["result"]["code"] == 0 and state["result"]["value"] == 60
        assert state["created_by"] == "token:tests"
        # Each downlink takes the node's next seq.
        r = client.post("/api/v1/nodes/n1/commands", json={"command": "identify"}, headers=headers)
        assert r.status_code == 202
        _, payload2 = received.get(timeout=10)
        assert proto.decode(payload2)[1] == seq + 1
        assert telemetry_store.count_frames(fleet, "n1", direction="down") == 2
    finally:
        node.loop_stop()
        node.disconnect()


def test_divisor_1_values_are_json_integers(client, db, auth_headers):
    ing = Ingest(db)
    body = [(6, 0, 415), (12, 0, 4_000_000_000), (3, 0, 37), (1, 0, 48)]
    ing.add("pl/v1/n3/up", frame(proto.TELEMETRY, 1, body, ts=1_000), 2_000.0)
    ing.flush()
    r = client.get("/api/v1/nodes/n3/telemetry", headers=auth_headers)
    assert b'"v":415' in r.data.replace(b" ", b"") and b"415.0" not in r.data
    assert b"4000000000.0" not in r.data and b"37.0" not in r.data
    latest = client.get("/api/v1/nodes/n3", headers=auth_headers).get_json()["latest"]
    assert [(x["n"], x["v"], type(x["v"])) for x in latest] == [
        ("humidity", 48.0, float), ("battery_level", 37, int), ("co2", 415, int),
        ("counter", 4_000_000_000, int)]
