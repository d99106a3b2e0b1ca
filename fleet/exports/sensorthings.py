"""OGC SensorThings API 1.1 destinations: the fleet's nodes and readings pushed into a city's
SensorThings server (FROST-Server and the like); the URL is the service root (.../v1.1).

- a Thing per node (its Location from the node's position, posted once and again when it moves),
- a Sensor per board, an ObservedProperty per quantity (the table QUANTITIES below),
- a Datastream per (node, quantity) with its unitOfMeasurement (UNITS below),
- Observations in batches: CreateObservations (the dataArray extension) where the service root
  lists it in its conformance, else one POST per Observation.

Every entity carries `properties.polylink_id` and is found again with
`$filter=properties/polylink_id eq '...'` before it is created, so a restarted fleet (an empty
cache) never creates one twice. Observations are idempotent by (Datastream, phenomenonTime):
before a Datastream's first push in a sender's life, and for any reading not newer than what
this sender pushed there, the times already on the server are read back and skipped.

A 4xx about one entity refuses the readings that needed it (reported), the rest go on; no answer,
5xx, 401/403/404/429 on the service: DestinationDown, the worker sends the batch again later.
Values go out in the registry's SenML units, described by UCUM.

A node's events are Observations of one more Datastream per node ("{node}/event", ObservedProperty
"Node event", OM_CategoryObservation): result the EVENT code (docs/firmware.md), parameters
{"event": word, "value": ..., "text": ..., "polylink_id": the item's id}. Two events may share a
time, so these are found again by parameters/polylink_id instead of by time.
"""

import base64
import json
from datetime import datetime
from urllib.parse import quote, urlsplit

from fleet.nodes.display import NAMES

from . import http
from .adapter import (
    Batch,
    Delivery,
    Destination,
    DestinationDown,
    Item,
    Node,
    event_name,
    iso,
)

KIND = "sensorthings"
LABEL = "OGC SensorThings API 1.1 server (FROST-Server, ...)"
SECRET = "user:password (HTTP Basic) or bearer token (optional)"
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
CATEGORY = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CategoryObservation"
EVENT_CODES = "urn:polylink:event-code"  # what an event Observation's result is
QUDT = "http://qudt.org/vocab/quantitykind/"
UCUM = "http://unitsofmeasure.org/ucum.html#"

# Registry name -> ObservedProperty definition (QUDT quantity kind). A quantity missing here gets
# a Polylink URN; the ObservedProperty's name comes from fleet/nodes/display.py.
QUANTITIES = {
    "temperature": QUDT + "Temperature",
    "humidity": QUDT + "RelativeHumidity",
    "battery_voltage": QUDT + "Voltage",
    "battery_level": QUDT + "DimensionlessRatio",
    "pressure": QUDT + "AtmosphericPressure",
    "illuminance": QUDT + "Illuminance",
    "co2": QUDT + "MoleFraction",
    "pm2_5": QUDT + "MassConcentration",
    "pm10": QUDT + "MassConcentration",
    "sound_level": QUDT + "SoundPressureLevel",
    "distance": QUDT + "Distance",
    "percentage": QUDT + "DimensionlessRatio",
    "counter": QUDT + "Count",
    "wind_speed": QUDT + "Speed",
    "wind_direction": QUDT + "PlaneAngle",
    "current": QUDT + "ElectricCurrent",
    "power": QUDT + "Power",
    "latitude": QUDT + "Latitude",
    "longitude": QUDT + "Longitude",
}
# SenML unit -> (unitOfMeasurement name, symbol, UCUM code). Values are sent as stored.
UNITS = {
    "Cel": ("degree Celsius", "°C", "Cel"), "%RH": ("percent relative humidity", "%", "%"),
    "%": ("percent", "%", "%"), "V": ("volt", "V", "V"), "A": ("ampere", "A", "A"),
    "W": ("watt", "W", "W"), "Pa": ("pascal", "Pa", "Pa"), "lx": ("lux", "lx", "lx"),
    "ppm": ("parts per million", "ppm", "[ppm]"), "ug/m3": ("microgram per cubic metre",
                                                           "µg/m³", "ug/m3"),
    "Bspl": ("bel sound pressure level", "B[SPL]", "B[SPL]"), "m": ("metre", "m", "m"),
    "m/s": ("metre per second", "m/s", "m/s"), "deg": ("degree", "°", "deg"),
    "lat": ("degree north", "°", "deg"), "lon": ("degree east", "°", "deg"),
    "count": ("count", "1", "1"),
}


def check(url: str, options: dict) -> dict:
    return http.check(KIND, url, options)


def ms(text: str) -> int:
    """An ISO 8601 time (or the start of an interval) as unix milliseconds."""
    return round(datetime.fromisoformat(text.split("/")[0].replace("Z", "+00:00")).timestamp()
                 * 1000)


def literal(value) -> str:
    """An OData literal: a number as is, a string quoted with ' doubled."""
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def unit_of(unit: str | None) -> dict:
    name, symbol, code = UNITS.get(unit or "", (unit or "unknown", unit or "", None))
    return {"name": name, "symbol": symbol, "definition": UCUM + code if code else ""}


def result(item: Item):
    """An Observation's result: a reading's value, an event's code."""
    return item.code if item.kind == "event" else item.value


def parameters(event: Item) -> dict:
    """An event Observation's parameters: what the code means, its value and text, its id."""
    out = {"event": event_name(event.code), "polylink_id": event.id}
    if event.value is not None:
        out["value"] = event.value
    if event.text:
        out["text"] = event.text
    return out


class Refused(Exception):
    """The server refused one entity (a 4xx); the text says which and why."""


class Sender:
    def __init__(self, dest: Destination):
        self.dest = dest
        self.client = http.Client(dest.url.rstrip("/"), dest.timeout, dest.options.get("ca_file"))
        self.root = self.client.parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if dest.secret and ":" in dest.secret:
            token = base64.b64encode(dest.secret.encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        elif dest.secret:
            self.headers["Authorization"] = f"Bearer {dest.secret}"
        self.data_array: bool | None = None  # from the service root's conformance, on first use
        self.ids: dict[tuple[str, str], object] = {}  # (collection, polylink_id) -> @iot.id
        self.placed: dict[str, tuple] = {}  # node -> (lat, lon) its Thing's Location has
        self.newest: dict[object, int] = {}  # datastream id -> newest ms this sender pushed
        self.lost: set = set()  # datastream ids that refused observations (maybe deleted)

    # -- HTTP ----------------------------------------------------------------------------------
    def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        """(status, JSON answer or None); DestinationDown for no answer or a 'not now' one."""
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        status, answer = self.client.request(method, path, data, self.headers)
        if status >= 500 or status in http.DOWN_STATUSES and status != 404 or status < 200:
            raise DestinationDown(http.describe(status, answer))
        if status == 404 and method == "POST" and "(" not in path:
            raise DestinationDown(f"{http.describe(status, answer)} (is {self.dest.url} the"
                                  " service root, ending in /v1.1?)")
        try:
            return status, json.loads(answer) if answer.strip() else None
        except ValueError:
            if status < 300:
                raise DestinationDown(f"answer to {method} {path} is not JSON:"
                                      f" {answer[:200]!r}") from None
            return status, None

    def path(self, relative: str) -> str:
        return self.root + "/" + quote(relative, safe="/()$=&,'?:")

    def get_all(self, relative: str) -> list[dict]:
        """Every entity of a collection query, following @iot.nextLink."""
        out, target = [], self.path(relative)
        while target:
            status, answer = self.call("GET", target)
            if status >= 300 or not isinstance(answer, dict):
                raise DestinationDown(f"GET {target} answered HTTP {status}")
            out.extend(answer.get("value", []))
            link = answer.get("@iot.nextLink")
            target = quote(urlsplit(link)._replace(scheme="", netloc="").geturl(),
                           safe="/()$=&,'?:%") if link else None
        return out

    def post(self, relative: str, body: dict, what: str) -> None:
        status, answer = self.call("POST", self.path(relative), body)
        if status >= 300:
            raise Refused(f"{what}: {http.describe(status, json.dumps(answer).encode())}")

    def supports_data_array(self) -> bool:
        if self.data_array is None:
            status, root = self.call("GET", self.root + "/")
            if status >= 300 or not isinstance(root, dict):
                raise DestinationDown(f"service root {self.dest.url} answered HTTP {status}")
            conformance = (root.get("serverSettings") or {}).get("conformance") or []
            self.data_array = any(c.rstrip("/").endswith("data-array") for c in conformance)
        return self.data_array

    # -- entities, found again by properties.polylink_id before they are created ---------------
    def find(self, collection: str, pid: str):
        key = (collection, pid)
        if key not in self.ids:
            found = self.get_all(f"{collection}?$filter=properties/polylink_id eq {literal(pid)}"
                                 "&$select=id")
            if found:
                self.ids[key] = found[0]["@iot.id"]
                self.lost.discard(self.ids[key])
        return self.ids.get(key)

    def ensure(self, collection: str, pid: str, body: dict):
        """The @iot.id of the entity with polylink_id pid, created from body if none exists."""
        found = self.find(collection, pid)
        if found is not None:
            return found
        body = dict(body, properties=dict(body.get("properties") or {}, polylink_id=pid))
        self.post(collection, body, f"{collection[:-1]} {pid}")
        found = self.find(collection, pid)
        if found is None:
            raise Refused(f"{collection[:-1]} {pid}: created, but not found again by"
                          " $filter on properties (does the server filter on properties?)")
        return found

    def thing(self, node: Node):
        thing = self.ensure("Things", node.id, {
            "name": node.name or node.id, "description": f"Polylink node {node.id}",
            "properties": {"board": node.board, "firmware": node.firmware,
                           "tags": list(node.tags)}})
        where = (node.lat, node.lon)
        if node.lat is not None and node.lon is not None and self.placed.get(node.id) != where:
            current = self.get_all(f"Things({literal(thing)})/Locations?$select=location")
            coords = [node.lon, node.lat]
            if not any((loc.get("location") or {}).get("coordinates") == coords
                       for loc in current):
                # Posting a Location linked to the Thing makes it the Thing's current one (and a
                # HistoricalLocation); the server derives FeaturesOfInterest from it.
                self.post("Locations", {
                    "name": node.location or node.id, "description": f"where {node.id} is",
                    "encodingType": "application/geo+json",
                    "location": {"type": "Point", "coordinates": coords},
                    "Things": [{"@iot.id": thing}]}, f"Location of {node.id}")
            self.placed[node.id] = where
        return thing

    def unlocated_feature(self, node: Node):
        """A FeatureOfInterest for a node with no position: a GeoJSON Feature whose geometry is
        null (RFC 7946 3.2), since a server can derive none from a Location it does not have."""
        return self.ensure("FeaturesOfInterest", f"foi:{node.id}", {
            "name": f"{node.name or node.id} (no position)", "description":
            f"what Polylink node {node.id} measures; its position is not known",
            "encodingType": "application/geo+json",
            "feature": {"type": "Feature", "geometry": None, "properties": {}}})

    def sensor(self, node: Node):
        board = node.board or "unknown"
        return self.ensure("Sensors", f"board:{board}", {
            "name": board, "description": f"Polylink board {board}", "encodingType": "text/html",
            "metadata": f"urn:polylink:board:{board}"})

    def datastream(self, node: Node, item: Item):
        if item.kind == "event":
            return self.event_stream(node)
        pid = f"{node.id}/{item.name}"
        base = (item.name or "").split("/")[0]
        label = NAMES.get(base, base) + (f" {item.name.split('/')[1]}" if "/" in item.name else "")
        prop = self.ensure("ObservedProperties", f"quantity:{base}", {
            "name": NAMES.get(base, base), "description": f"Polylink quantity {base}",
            "definition": QUANTITIES.get(base, f"urn:polylink:quantity:{base}")})
        return self.ensure("Datastreams", pid, {
            "name": f"{node.name or node.id}: {label}",
            "description": f"{label} measured by Polylink node {node.id}",
            "observationType": MEASUREMENT, "unitOfMeasurement": unit_of(item.unit),
            "Thing": {"@iot.id": self.thing(node)}, "Sensor": {"@iot.id": self.sensor(node)},
            "ObservedProperty": {"@iot.id": prop}})

    def event_stream(self, node: Node):
        """The node's events Datastream: a category observation per event, its code."""
        prop = self.ensure("ObservedProperties", "quantity:event", {
            "name": "Node event", "description": "What a Polylink node reports of itself: the"
            " EVENT code as result (1 bad downlink, 2 sensor failed, 4 crashed), its word, value"
            " and text in the Observation's parameters", "definition": EVENT_CODES})
        return self.ensure("Datastreams", f"{node.id}/event", {
            "name": f"{node.name or node.id}: events",
            "description": f"events reported by Polylink node {node.id}",
            "observationType": CATEGORY,
            "unitOfMeasurement": {"name": "Polylink EVENT code", "symbol": "",
                                  "definition": EVENT_CODES},
            "Thing": {"@iot.id": self.thing(node)}, "Sensor": {"@iot.id": self.sensor(node)},
            "ObservedProperty": {"@iot.id": prop}})

    # -- observations ---------------------------------------------------------------------------
    def fresh(self, ds, items: list[Item]) -> list[Item]:
        """items minus those the Datastream already has: a reading by its time (one per time),
        an event by its id (parameters.polylink_id; two events may share a time)."""
        events = items[0].kind == "event"
        by_key: dict = {}
        for item in items:
            by_key.setdefault(item.id if events else round(item.t * 1000), item)
        newest = self.newest.get(ds)
        doubtful = [round(i.t * 1000) for i in by_key.values()
                    if newest is None or round(i.t * 1000) <= newest]
        if doubtful:
            # First sight after a start: everything from the oldest on, so newest also covers
            # what an earlier run pushed beyond this batch. Later: just the doubtful span.
            span = f"phenomenonTime ge {iso(min(doubtful) / 1000)}"
            if newest is not None:
                span += f" and phenomenonTime le {iso(max(doubtful) / 1000)}"
            there = self.get_all(f"Datastreams({literal(ds)})/Observations?$filter="
                                 f"{span}&$select=phenomenonTime"
                                 + (",parameters" if events else ""))
            if there:
                self.newest[ds] = max(self.newest.get(ds, 0),
                                      max(ms(o["phenomenonTime"]) for o in there))
            have = ({(o.get("parameters") or {}).get("polylink_id") for o in there} if events
                    else {ms(o["phenomenonTime"]) for o in there})
            by_key = {k: i for k, i in by_key.items() if k not in have}
        return sorted(by_key.values(), key=lambda i: i.t)

    def push(self, groups: list[tuple], delivery: Delivery) -> None:
        """groups: (datastream id, feature of interest id or None, items). Refused items go to
        delivery; the others are on the server afterwards."""
        if self.supports_data_array():
            body = []
            for ds, foi, items in groups:
                events = items[0].kind == "event"
                components = ["phenomenonTime", "result"] + (["parameters"] if events else []) \
                    + (["FeatureOfInterest/id"] if foi else [])
                body.append({"Datastream": {"@iot.id": ds}, "components": components,
                             "dataArray": [[iso(i.t), result(i)]
                                           + ([parameters(i)] if events else [])
                                           + ([foi] if foi else []) for i in items]})
            status, answer = self.call("POST", self.path("CreateObservations"), body)
            if status < 300 and isinstance(answer, list):
                links = iter(answer)
                for ds, _foi, items in groups:
                    bad = [i for i in items if next(links, "error") == "error"]
                    delivery.refuse(bad, "the server answered 'error' for this observation in"
                                    " CreateObservations")
                    if bad:
                        self.forget(ds)
                self.mark([g for g in groups if not self.forgotten(g[0])])
                return
            # The whole request refused (a 4xx): one by one, so only the bad ones are refused.
        for ds, foi, items in groups:
            for item in items:
                body = {"phenomenonTime": iso(item.t), "result": result(item),
                        "Datastream": {"@iot.id": ds}}
                if item.kind == "event":
                    body["parameters"] = parameters(item)
                if foi:
                    body["FeatureOfInterest"] = {"@iot.id": foi}
                try:
                    self.post("Observations", body, f"Observation {item.id}")
                except Refused as e:
                    delivery.refuse(item, str(e))
                    self.forget(ds)
        self.mark([g for g in groups if not self.forgotten(g[0])])

    def forget(self, ds) -> None:
        """Look a Datastream up again next time: a refusal may mean it was deleted there."""
        for key in [k for k, v in self.ids.items() if v == ds]:
            del self.ids[key]
        self.newest.pop(ds, None)
        self.lost.add(ds)

    def forgotten(self, ds) -> bool:
        return ds in self.lost

    def mark(self, groups) -> None:
        for ds, _foi, items in groups:
            if items:
                top = max(round(i.t * 1000) for i in items)
                self.newest[ds] = max(self.newest.get(ds, top), top)

    def send(self, batch: Batch) -> Delivery:
        delivery = Delivery()
        streams: dict[tuple[str, str | None], list[Item]] = {}
        for item in batch.items:
            if item.kind == "event":
                streams.setdefault((item.node.id, None), []).append(item)
            elif item.value is not None:
                streams.setdefault((item.node.id, item.name), []).append(item)
        groups = []
        for (node_id, _name), items in streams.items():
            node = batch.nodes.get(node_id) or items[0].node
            try:
                ds = self.datastream(node, items[0])
                foi = None if node.lat is not None and node.lon is not None \
                    else self.unlocated_feature(node)
                items = self.fresh(ds, items)
            except Refused as e:
                delivery.refuse(items, str(e))
                continue
            if items:
                groups.append((ds, foi, items))
        if groups:
            self.push(groups, delivery)
        return delivery

    def close(self) -> None:
        self.client.close()


def open(dest: Destination) -> Sender:  # noqa: A001 - the adapter contract's name
    return Sender(dest)
