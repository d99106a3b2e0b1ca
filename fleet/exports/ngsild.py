"""NGSI-LD destinations (ETSI GS CIM 009): readings as Smart Data Models entities, sent with
the batch upsert POST {url}/ngsi-ld/v1/entityOperations/upsert?options=update.

Per node one `Device` entity (urn:ngsi-ld:Device:polylink:{node}: name, firmwareVersion,
deviceState, batteryLevel, location, dateLastValueReported), upserted with each batch; the
node's events are instances of its deviceState (device_state), since no Smart Data Model fits
them (Alert's categories are traffic, weather, health... not a device fault). Per
node, time and entity type one observation entity (WeatherObserved, AirQualityObserved;
DeviceMeasurement per reading for what no domain model has), its id built from node, type and
time, so a re-sent batch upserts the same entities with the same values: idempotent. Which
quantity becomes which attribute, in which unit, is ngsild_terms.py's one table.

The body is plain JSON (Content-Type: application/json) and the @context comes in the Link
header (CIM 009 6.3.5): the destination option "context" is the URL where the broker can fetch
ngsild_terms.context() (the fleet serves it at /static/ngsi-ld-context.jsonld). Answers: 201/204 all
stored; 207 some refused (their readings are reported, the rest count as delivered); another
4xx for the whole request: sent again node by node, and only the nodes still refused are
reported; 5xx, 401, 403, timeouts: down.
"""

import json
import threading
from collections import deque
from concurrent import futures
from itertools import islice

import orjson

from . import http
from .adapter import (
    Batch,
    Delivery,
    Destination,
    DestinationDown,
    ExportError,
    Item,
    Node,
    event_name,
    iso,
)
from .ngsild_terms import MEASUREMENT_UNITS, QUANTITIES

KIND = "ngsi-ld"
LABEL = "NGSI-LD broker (Smart Data Models, batch upsert)"
SECRET = "bearer token (optional)"
UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert?options=update"
# Entities per upsert request: ~400 bytes each, so bodies stay near 200 KB, below what brokers
# take by default, whatever batch size the worker runs with.
MAX_ENTITIES = 500
AHEAD = 2  # requests built and not yet answered: one in flight, one waiting (Sender.send)
LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


def check(url: str, options: dict) -> dict:
    http.check(KIND, url, options, known=("context", "tenant", "ca_file"))
    ctx = options.get("context")
    if not isinstance(ctx, str) or not ctx.startswith(("https://", "http://")):
        raise ExportError("ngsi-ld: option context must be the URL where the broker can fetch"
                          " the fleet's context: https://<fleet>/static/ngsi-ld-context.jsonld")
    return dict(options)


def device_id(node: str) -> str:
    return f"urn:ngsi-ld:Device:polylink:{node}"


def prop(value, unit_code=None, observed_at=None) -> dict:
    p = {"type": "Property", "value": value}
    if unit_code:
        p["unitCode"] = unit_code
    if observed_at:
        p["observedAt"] = observed_at
    return p


def date_value(t: float) -> dict:
    return {"type": "Property", "value": {"@type": "DateTime", "@value": iso(t)}}


def place(node: Node) -> dict | None:
    if node.lat is None or node.lon is None:
        return None
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [node.lon, node.lat]}}


def event_dataset(code: int | None) -> str:
    """The datasetId of the deviceState instance that holds a node's last event of a code."""
    return f"urn:ngsi-ld:Dataset:polylink:event:{code}"


def device_state(node: Node, items: list[Item]) -> dict | list[dict]:
    """deviceState: online/offline (the default instance) and, when the items have events, one
    more instance per EVENT code (CIM 009 4.5.5 multi-attribute, datasetId event_dataset) with
    the newest such event as "<word>: <text>" (or "<word> (<value>)") at its observedAt. An
    update replaces only the instances it names, so each code's last event stays on the Device
    and a temporal broker keeps every one it was sent."""
    state = prop("online" if node.online else "offline")
    newest: dict = {}
    for item in items:
        if item.kind == "event" and (item.code not in newest or item.t >= newest[item.code].t):
            newest[item.code] = item
    if not newest:
        return state
    out = [state]
    for code in sorted(newest, key=lambda c: (c is None, c)):
        ev = newest[code]
        word = event_name(code)
        text = f"{word}: {ev.text}" if ev.text else (
            f"{word} ({ev.value})" if ev.value is not None else word)
        out.append(dict(prop(text, None, iso(ev.t)), datasetId=event_dataset(code)))
    return out


def device_entity(node: Node, items: list[Item]) -> dict:
    """The node as a Smart Data Models Device, as of the newest of its items."""
    newest = max(i.t for i in items)
    e = {"id": device_id(node.id), "type": "Device", "name": prop(node.name or node.id),
         "category": prop(["sensor"]),
         "deviceState": device_state(node, items),
         "dateLastValueReported": date_value(newest)}
    if node.firmware:
        e["firmwareVersion"] = prop(node.firmware)
    levels = [i for i in items if i.kind == "reading" and i.name == "battery_level"]
    if levels:
        last = max(levels, key=lambda i: i.t)
        term = QUANTITIES["battery_level"]
        e["batteryLevel"] = prop(round(last.value * term.factor, 4), term.unit_code, iso(last.t))
    where = place(node)
    if where:
        e["location"] = where
    return e


def observation_entities(node: Node, items: list[Item]) -> dict[str, tuple[dict, list[Item]]]:
    """{entity id: (entity, the items it carries)} for one node's readings."""
    out: dict[str, tuple[dict, list[Item]]] = {}
    where = place(node)
    # Built once per node and shared by its entities (nothing changes them after): this loop is
    # most of the sender's own CPU per reading (docs/benchmarks.md).
    ref = {"type": "Relationship", "object": device_id(node.id)}
    for item in items:
        if item.kind != "reading":
            continue  # events go on the Device (device_state)
        at = iso(item.t)
        term = QUANTITIES.get(item.name)
        if term is not None:
            model = term.model
            if model == "Device":
                continue  # goes on the Device entity (device_entity)
            eid = f"urn:ngsi-ld:{model}:polylink:{node.id}:{at}"
            attr = term.attribute
            value = {"type": "Property", "value": round(item.value * term.factor, 6)}
            if term.unit_code:
                value["unitCode"] = term.unit_code
            value["observedAt"] = at
        else:
            eid = f"urn:ngsi-ld:DeviceMeasurement:polylink:{node.id}:{item.name}:{at}"
            model, attr = "DeviceMeasurement", "numValue"
            code, factor = MEASUREMENT_UNITS.get(item.unit or "", (None, 1))
            value = prop(round(item.value * factor, 6), None, at)
        got = out.get(eid)
        if got is None:
            e = {"id": eid, "type": model,
                 "dateObserved": {"type": "Property", "value": {"@type": "DateTime",
                                                                "@value": at}},
                 "refDevice": ref}
            if where:
                e["location"] = where
            if model == "DeviceMeasurement":
                e["controlledProperty"] = prop(item.name)
                e["measurementType"] = prop("Instant")
                if code:
                    e["unit"] = prop(code)
            got = out[eid] = (e, [])
        got[0][attr] = value
        got[1].append(item)
    return out


def iter_entities(batch: Batch):
    """Every entity a batch upserts, with the items each carries (a Device: its battery and
    events), node by node, built as they are taken."""
    for node_id, items in batch.by_node().items():
        node = batch.nodes.get(node_id) or items[0].node
        device = device_entity(node, items)
        yield device, [i for i in items if i.name == "battery_level" or i.kind == "event"]
        yield from observation_entities(node, items).values()


def entities(batch: Batch) -> list[tuple[dict, list[Item]]]:
    """iter_entities as a list."""
    return list(iter_entities(batch))


class Sender:
    def __init__(self, dest: Destination):
        self.dest = dest
        base = dest.url.rstrip("/")
        self.client = http.Client(base, dest.timeout, dest.options.get("ca_file"))
        self.path = (self.client.parts.path.rstrip("/") or "") + UPSERT_PATH
        self.headers = {"Content-Type": "application/json", "Accept": "application/json",
                        "Link": f'<{dest.options["context"]}>; {LINK_REL}'}
        if dest.options.get("tenant"):
            self.headers["NGSILD-Tenant"] = dest.options["tenant"]
        if dest.secret:
            self.headers["Authorization"] = f"Bearer {dest.secret}"
        self.last_refusal = ""
        # The one thread that uses self.client (see send).
        self._poster = futures.ThreadPoolExecutor(1, thread_name_prefix="ngsi-ld-post")

    def _upsert(self, pairs, delivery: Delivery, body: bytes | None = None) -> int | None:
        """POST one upsert (body: the pairs' entities as JSON, if already encoded); refused
        entities go into delivery. The status if the broker refused the whole request with a
        4xx, else None."""
        if body is None:
            body = orjson.dumps([e for e, _ in pairs])
        status, answer = self.client.request("POST", self.path, body, self.headers)
        if status in (200, 201, 204):
            return None
        if status == 207:
            try:
                errors = json.loads(answer).get("errors", [])
                refused = {e["entityId"]: e.get("error", {}) for e in errors}
            except (ValueError, AttributeError, KeyError, TypeError):
                raise DestinationDown(f"207 answer is not a BatchOperationResult:"
                                      f" {answer[:200]!r}") from None
            for entity, items in pairs:
                if entity["id"] in refused:
                    err = refused[entity["id"]]
                    reason = (err.get("detail") or err.get("title") or err.get("type")
                              if isinstance(err, dict) else str(err))
                    delivery.refuse(items, f"{entity['id']}: {reason}")
            return None
        if status >= 500 or status in http.DOWN_STATUSES or status < 200:
            raise DestinationDown(http.describe(status, answer))
        self.last_refusal = http.describe(status, answer)
        return status

    def send(self, batch: Batch) -> Delivery:
        """Upsert a batch in requests of at most MAX_ENTITIES entities (bodies of ~200 KB),
        in order.

        The requests go out on this sender's own thread while the next request's entities are
        built here: building them is most of this adapter's CPU and the broker's answer is
        most of its wait, and the two overlap (docs/benchmarks.md). At most AHEAD requests are
        built and not yet answered; after a failed one, none of the rest goes out (a later one
        must not arrive before an earlier one's retry)."""
        delivery = Delivery()
        failed = threading.Event()

        def post(pairs, body):
            if failed.is_set():
                return
            try:
                self._send(pairs, body, delivery)
            except BaseException:
                failed.set()
                raise

        pending: deque = deque()
        built = iter_entities(batch)
        try:
            while pairs := list(islice(built, MAX_ENTITIES)):
                # orjson: the same compact JSON as json.dumps, in a fifth of the time.
                body = orjson.dumps([e for e, _ in pairs])
                while len(pending) >= AHEAD:
                    pending.popleft().result()  # raises what the request raised
                pending.append(self._poster.submit(post, pairs, body))
            while pending:
                pending.popleft().result()
        finally:
            if pending:  # left by an exception: stop what has not gone out, await the rest
                failed.set()
                futures.wait(pending)
        return delivery

    def _send(self, pairs, body: bytes, delivery: Delivery) -> None:
        if self._upsert(pairs, delivery, body) is None:
            return
        # The broker refused the whole request (400, 413, 422): a broker that does not answer
        # 207 per entity. Send each node's entities alone so only the bad node is refused.
        by_node: dict[str, list] = {}
        for entity, items in pairs:
            node = entity["refDevice"]["object"] if "refDevice" in entity else entity["id"]
            by_node.setdefault(node, []).append((entity, items))
        if len(by_node) == 1:
            for _entity, items in pairs:
                delivery.refuse(items, self.last_refusal)
            return
        for group in by_node.values():
            if self._upsert(group, delivery) is not None:
                for _entity, items in group:
                    delivery.refuse(items, self.last_refusal)

    def close(self) -> None:
        self._poster.shutdown(wait=True)
        self.client.close()


def open(dest: Destination) -> Sender:  # noqa: A001 - the adapter contract's name
    return Sender(dest)
