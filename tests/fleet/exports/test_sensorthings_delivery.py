"""SensorThings delivery against a real SensorThings API 1.1 server (django-ogc-sensorthings on
SQLite, the session's `sensorthings_server`), read back through its own API. Every test uses node
ids of its own, so tests share the server without seeing each other's entities."""

import base64
import json
import urllib.request
import uuid
from urllib.parse import quote

import pytest
from test_webhook_delivery import ingest, running, wait_for  # noqa: F401 - fixture

from fleet.exports import registry, sensorthings
from fleet.exports.adapter import Batch, Destination, DestinationDown, ExportError, Item, Node
from fleet.store import nodes as node_store

T0 = 1_700_000_000


def get(server, relative: str):
    """Every entity of a query on the server, following @iot.nextLink (one entity: in a list)."""
    auth = "Basic " + base64.b64encode(server.login.encode()).decode()
    url, out = server.url + "/" + quote(relative, safe="/()$=&,'?:"), []
    while url:
        req = urllib.request.Request(url.replace(" ", "%20"), headers={"Authorization": auth})
        with urllib.request.urlopen(req, timeout=10) as resp:
            page = json.load(resp)
        out.extend(page["value"] if "value" in page else [page])
        url = page.get("@iot.nextLink")
    return out


def by_pid(server, collection, pid):
    return get(server, f"{collection}?$filter=properties/polylink_id eq '{pid}'")


def node_id(prefix="n") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def dest(server, secret=None) -> Destination:
    return Destination(name="city", kind="sensorthings", url=server.url, options={},
                       secret=secret if secret is not None else server.login)


def readings(node: Node, count: int, t0=T0) -> Batch:
    items = []
    for i in range(count):
        t = t0 + i
        items.append(Item(id=f"r:{node.id}:0:0:{t * 1000}", kind="reading", node=node, t=t,
                          value=20 + i / 10, qid=0, inst=0, name="temperature", unit="Cel"))
        items.append(Item(id=f"r:{node.id}:1:0:{t * 1000}", kind="reading", node=node, t=t,
                          value=50.5, qid=1, inst=0, name="humidity", unit="%RH"))
    return Batch(items=tuple(items), nodes={node.id: node})


def observations(server, ds_id) -> list[tuple[str, float]]:
    rows = get(server, f"Datastreams('{ds_id}')/Observations?$select=phenomenonTime,result")
    return sorted((o["phenomenonTime"], o["result"]) for o in rows)


def test_thing_location_datastreams_and_observations_read_back(sensorthings_server):
    server = sensorthings_server
    node = Node(id=node_id(), name="Marktplatz 4", board="esp32-s3-bme280", lat=52.52,
                lon=13.405, location="Marktplatz, pole 4")
    sender = sensorthings.open(dest(server))
    try:
        delivery = sender.send(readings(node, 30))
    finally:
        sender.close()
    assert delivery.refused == {}
    things = get(server, f"Things?$filter=properties/polylink_id eq '{node.id}'"
                 "&$expand=Locations")
    assert len(things) == 1 and things[0]["name"] == "Marktplatz 4"
    assert things[0]["properties"]["board"] == "esp32-s3-bme280"
    assert [loc["location"]["coordinates"] for loc in things[0]["Locations"]] == [[13.405, 52.52]]
    streams = get(server, f"Things('{things[0]['@iot.id']}')/Datastreams")
    # By navigation path: this server's $expand of a to-one entity in a collection gives every
    # Datastream the first one's (docs/integrations.md, "SensorThings").
    for s in streams:
        for nav in ("ObservedProperty", "Sensor"):
            (s[nav],) = get(server, f"Datastreams('{s['@iot.id']}')/{nav}")
    units = {s["properties"]["polylink_id"]: s["unitOfMeasurement"] for s in streams}
    assert units[f"{node.id}/temperature"] == {
        "name": "degree Celsius", "symbol": "°C",
        "definition": "http://unitsofmeasure.org/ucum.html#Cel"}
    assert units[f"{node.id}/humidity"]["symbol"] == "%"
    assert {s["ObservedProperty"]["name"] for s in streams} == {"Temperature", "Humidity"}
    assert {s["Sensor"]["name"] for s in streams} == {"esp32-s3-bme280"}
    temp = next(s for s in streams if s["properties"]["polylink_id"].endswith("/temperature"))
    got = observations(server, temp["@iot.id"])
    assert len(got) == 30
    assert got[0] == ("2023-11-14T22:13:20+00:00", 20.0)
    assert got[29] == ("2023-11-14T22:13:49+00:00", pytest.approx(22.9))


def test_the_same_batch_twice_and_after_a_restart_creates_nothing_twice(sensorthings_server):
    server = sensorthings_server
    node = Node(id=node_id(), board="esp32", lat=48.1, lon=11.5)
    batch = readings(node, 12)
    first = sensorthings.open(dest(server))
    first.send(batch)
    first.send(batch)  # the worker re-sends a batch it could not confirm
    first.close()
    again = sensorthings.open(dest(server))  # a restarted fleet: nothing cached
    again.send(batch)
    again.send(readings(node, 15))  # 12 old + 3 new
    again.close()
    assert len(by_pid(server, "Things", node.id)) == 1
    assert len(by_pid(server, "Sensors", "board:esp32")) == 1
    assert len(by_pid(server, "ObservedProperties", "quantity:temperature")) == 1
    (ds,) = by_pid(server, "Datastreams", f"{node.id}/temperature")
    times = [t for t, _v in observations(server, ds["@iot.id"])]
    assert len(times) == len(set(times)) == 15
    locations = get(server, f"Things('{by_pid(server, 'Things', node.id)[0]['@iot.id']}')"
                    "/Locations")
    assert len(locations) == 1


def test_a_node_without_position_gets_an_unlocated_feature_of_interest(sensorthings_server):
    server = sensorthings_server
    node = Node(id=node_id())
    sender = sensorthings.open(dest(server))
    assert sender.send(readings(node, 3)).refused == {}
    sender.close()
    (foi,) = by_pid(server, "FeaturesOfInterest", f"foi:{node.id}")
    assert foi["feature"]["geometry"] is None
    (ds,) = by_pid(server, "Datastreams", f"{node.id}/humidity")
    assert [v for _t, v in observations(server, ds["@iot.id"])] == [50.5] * 3


def test_one_refused_entity_is_reported_and_the_rest_go_on(sensorthings_server):
    server = sensorthings_server
    good = Node(id=node_id(), lat=1.0, lon=2.0)
    # What this server refuses for one entity: a result that is not a number (its results are
    # floats); CreateObservations answers "error" for that row alone.
    bad = Node(id=node_id("bad"), lat=1.0, lon=2.0)
    items = list(readings(good, 4).items)
    items.append(Item(id=f"r:{bad.id}:0:0:1", kind="reading", node=bad, t=T0, value="hot",
                      qid=0, inst=0, name="temperature", unit="Cel"))
    sender = sensorthings.open(dest(server))
    delivery = sender.send(Batch(items=tuple(items), nodes={good.id: good, bad.id: bad}))
    sender.close()
    assert list(delivery.refused) == [f"r:{bad.id}:0:0:1"]
    (ds,) = by_pid(server, "Datastreams", f"{good.id}/temperature")
    assert len(observations(server, ds["@iot.id"])) == 4


def test_one_by_one_when_the_server_has_no_data_array(sensorthings_server):
    server = sensorthings_server
    node = Node(id=node_id(), lat=1.0, lon=2.0)
    sender = sensorthings.open(dest(server))
    sender.data_array = False  # as a server whose conformance does not list data-array
    assert sender.send(readings(node, 5)).refused == {}
    sender.close()
    (ds,) = by_pid(server, "Datastreams", f"{node.id}/temperature")
    assert len(observations(server, ds["@iot.id"])) == 5


def test_down_and_wrong_login_are_destination_down(sensorthings_server):
    from services import free_port

    node = Node(id=node_id(), lat=1.0, lon=2.0)
    nowhere = Destination(name="x", kind="sensorthings",
                          url=f"http://127.0.0.1:{free_port()}/sta/v1.1", options={})
    with pytest.raises(DestinationDown, match="cannot reach"):
        sensorthings.open(nowhere).send(readings(node, 1))
    with pytest.raises(DestinationDown, match="401"):
        sensorthings.open(dest(sensorthings_server, "city:wrong")).send(readings(node, 1))
    assert by_pid(sensorthings_server, "Things", node.id) == []


def test_check_allows_only_tls_or_loopback_and_known_options():
    assert sensorthings.check("https://sta.city.example/FROST/v1.1", {}) == {}
    with pytest.raises(ExportError, match="https"):
        sensorthings.check("http://sta.city.example/v1.1", {})
    with pytest.raises(ExportError, match="unknown options"):
        sensorthings.check("https://sta.city.example/v1.1", {"tenant": "x"})


def test_the_worker_delivers_stored_readings_and_resumes_after_an_outage(
        db, settings, running, tmp_path):  # noqa: F811
    from services import SensorThingsServer

    server = SensorThingsServer(tmp_path / "sta").start()
    try:
        node = node_id()
        ingest(db, node, 1, 20)
        node_store.set_place(db, node, 52.52, 13.405, "Marktplatz")
        registry.add(db, settings.data_dir, {"name": "city", "kind": "sensorthings",
                                             "url": server.url}, server.login, from_start=True)
        running()
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 40, timeout=60)
        server.stop()
        ingest(db, node, 21, 10)
        assert wait_for(lambda: registry.get(db, "city")["state"] == "down", timeout=30)
        assert "cannot reach" in registry.get(db, "city")["last_error"]
        server.start()
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 60, timeout=60)
        (ds,) = by_pid(server, "Datastreams", f"{node}/temperature")
        got = observations(server, ds["@iot.id"])
        assert len(got) == 30 and len({t for t, _v in got}) == 30
        assert got[0] == ("2023-11-14T22:13:21+00:00", 21.0)
        assert registry.get(db, "city")["refused"] == 0
    finally:
        server.stop()


def test_a_late_reading_older_than_the_last_push_arrives_once(sensorthings_server):
    server = sensorthings_server
    node = Node(id=node_id(), lat=1.0, lon=2.0)
    sender = sensorthings.open(dest(server))
    sender.send(readings(node, 10, t0=T0 + 100))
    late = readings(node, 3, t0=T0)  # a LoRaWAN frame stored after newer ones
    sender.send(late)
    sender.send(late)
    sender.close()
    (ds,) = by_pid(server, "Datastreams", f"{node.id}/temperature")
    times = [t for t, _v in observations(server, ds["@iot.id"])]
    assert len(times) == len(set(times)) == 13
    assert times[0] == "2023-11-14T22:13:20+00:00"


def test_a_node_that_moved_gets_its_new_location(sensorthings_server):
    server = sensorthings_server
    node = Node(id=node_id(), lat=1.0, lon=2.0)
    sender = sensorthings.open(dest(server))
    sender.send(readings(node, 2))
    moved = Node(id=node.id, lat=3.0, lon=4.0)
    sender.send(readings(moved, 2, t0=T0 + 10))
    sender.close()
    (thing,) = by_pid(server, "Things", node.id)
    places = [loc["location"]["coordinates"]
              for loc in get(server, f"Things('{thing['@iot.id']}')/Locations")]
    # This server keeps the old Location beside the new one and writes no HistoricalLocation
    # (FROST replaces it and does): the new one is there either way, and only once.
    assert places.count([4.0, 3.0]) == 1 and places.count([2.0, 1.0]) == 1


def test_a_datastream_deleted_on_the_server_refuses_its_readings_then_comes_back(
        sensorthings_server):
    server = sensorthings_server
    a, b = Node(id=node_id(), lat=1.0, lon=2.0), Node(id=node_id(), lat=1.0, lon=2.0)

    def both(t0):
        items = readings(a, 2, t0).items + readings(b, 2, t0).items
        return Batch(items=items, nodes={a.id: a, b.id: b})

    sender = sensorthings.open(dest(server))
    sender.send(both(T0))
    (gone,) = by_pid(server, "Datastreams", f"{a.id}/temperature")
    auth = "Basic " + base64.b64encode(server.login.encode()).decode()
    urllib.request.urlopen(urllib.request.Request(  # the city deletes it on its server
        f"{server.url}/Datastreams('{gone['@iot.id']}')", method="DELETE",
        headers={"Authorization": auth}), timeout=10).close()
    refused = sender.send(both(T0 + 10)).refused
    assert sorted(refused) == sorted(f"r:{a.id}:0:0:{(T0 + 10 + i) * 1000}" for i in range(2))
    assert all("error" in reason for reason in refused.values())
    assert sender.send(both(T0 + 20)).refused == {}  # made again, found by its property
    sender.close()
    (again,) = by_pid(server, "Datastreams", f"{a.id}/temperature")
    assert again["@iot.id"] != gone["@iot.id"]
    assert len(observations(server, again["@iot.id"])) == 2
    (other,) = by_pid(server, "Datastreams", f"{b.id}/temperature")
    assert len(observations(server, other["@iot.id"])) == 6


def test_events_are_observations_of_the_nodes_event_datastream_once(sensorthings_server):
    server = sensorthings_server
    node = Node(id=node_id(), board="esp32", lat=52.52, lon=13.405)
    events = (Item(id=f"e:{node.id}:7", kind="event", node=node, t=T0 + 5, value=0, code=2,
                   text="ds18x20: no device"),
              Item(id=f"e:{node.id}:8", kind="event", node=node, t=T0 + 5, value=3, code=4,
                   text="MemoryError: memory allocation failed"),
              Item(id=f"e:{node.id}:9", kind="event", node=node, t=T0 + 9, value=2, code=1))
    batch = Batch(items=readings(node, 3).items + events, nodes={node.id: node})
    for data_array in (True, False):  # a new sender, as after a restart: found again, not twice
        sender = sensorthings.open(dest(server))
        sender.data_array = data_array
        try:
            assert sender.send(batch).refused == {}
        finally:
            sender.close()
    (stream,) = by_pid(server, "Datastreams", f"{node.id}/event")
    assert stream["observationType"].endswith("OM_CategoryObservation")
    assert stream["unitOfMeasurement"]["definition"] == sensorthings.EVENT_CODES
    rows = get(server, f"Datastreams('{stream['@iot.id']}')/Observations"
               "?$select=phenomenonTime,result,parameters")
    got = sorted((sensorthings.ms(o["phenomenonTime"]), o["result"],
                  o["parameters"]["polylink_id"],
                  o["parameters"]["event"], o["parameters"].get("text")) for o in rows)
    assert got == [
        ((T0 + 5) * 1000, 2, f"e:{node.id}:7", "sensorFailed", "ds18x20: no device"),
        ((T0 + 5) * 1000, 4, f"e:{node.id}:8", "crashed",
         "MemoryError: memory allocation failed"),
        ((T0 + 9) * 1000, 1, f"e:{node.id}:9", "badDownlink", None)]
    (prop,) = get(server, f"Datastreams('{stream['@iot.id']}')/ObservedProperty")
    assert prop["name"] == "Node event"
    temps = by_pid(server, "Datastreams", f"{node.id}/temperature")
    assert len(observations(server, temps[0]["@iot.id"])) == 3
