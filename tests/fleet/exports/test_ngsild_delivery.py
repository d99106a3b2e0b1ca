"""NGSI-LD delivery through the export worker to the simulated broker (ngsild_broker.py, which
follows CIM 009 for the batch upsert and expands every entity with pyld)."""

import time

import pytest
from ngsild_broker import NgsiLdBroker
from ngsild_ld import FLEET_CONTEXT_URL
from polylink import proto
from test_webhook_delivery import ingest, running, wait_for  # noqa: F401 - fixture

from fleet.exports import registry
from fleet.ingest import Ingest
from fleet.store import nodes as node_store

TOKEN = "broker-token"


def add(db, settings, broker, secret=TOKEN, **kw):
    cfg = {"name": "city", "kind": "ngsi-ld", "url": broker.url,
           "options": {"context": FLEET_CONTEXT_URL}}
    return registry.add(db, settings.data_dir, cfg, secret, from_start=True, **kw)


def test_every_reading_becomes_an_entity_attribute_once(db, settings, running):  # noqa: F811
    ingest(db, "n1", 1, 25)
    node_store.set_place(db, "n1", 52.52, 13.405, "Marktplatz")
    with NgsiLdBroker(TOKEN) as broker:
        add(db, settings, broker)
        running()
        assert wait_for(lambda: registry.get(db, "city")["behind"] == 0)
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 50)
        weather = {k: v for k, v in broker.entities.items() if ":WeatherObserved:" in k}
        assert len(weather) == 25  # one observation per frame time
        temps = sorted((e["dateObserved"]["value"]["@value"], e["temperature"]["value"])
                       for e in weather.values())
        assert temps[0] == ("2023-11-14T22:13:21.000Z", 21)
        assert all(e["relativeHumidity"]["value"] == 0.5 for e in weather.values())
        device = broker.entities["urn:ngsi-ld:Device:polylink:n1"]
        assert device["dateLastValueReported"]["value"]["@value"] == "2023-11-14T22:13:45.000Z"
        assert device["location"]["value"]["coordinates"] == [13.405, 52.52]
        # each (entity, attribute, observedAt) sent once, though the Device went with each batch
        readings = [i for i in broker.instances if ":WeatherObserved:" in i[0]]
        assert len(readings) == len(set(readings)) == 50
        assert all(broker.expanded[k] for k in weather)  # the broker could expand each one


def test_a_refused_entity_is_reported_and_the_rest_delivered(db, settings, running):  # noqa: F811
    ingest(db, "n1", 1, 5)
    ingest(db, "bad", 1, 5)
    with NgsiLdBroker(TOKEN) as broker:
        broker.refuse_ids = {":bad:"}
        add(db, settings, broker)
        running()
        assert wait_for(lambda: registry.get(db, "city")["refused"] == 10)
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 10)
        assert not [k for k in broker.entities if ":bad:" in k and "Device" not in k]
        assert len([k for k in broker.entities if ":n1:" in k]) == 5
        reasons = {r["reason"] for r in registry.refused(db, "city")}
        assert all("refused by this broker's policy" in r for r in reasons)


def test_down_then_back_gets_everything_and_a_bad_token_is_down(db, settings, running):  # noqa: F811,E501
    with NgsiLdBroker(TOKEN) as broker:
        add(db, settings, broker, secret="wrong")
        broker.down = True
        ingest(db, "n1", 1, 10)
        running()
        assert wait_for(lambda: registry.get(db, "city")["state"] == "down")
        assert "HTTP 503" in registry.get(db, "city")["last_error"]
        broker.down = False
        assert wait_for(lambda: "HTTP 401" in (registry.get(db, "city")["last_error"] or ""))
        assert registry.get(db, "city")["behind"] == 20
        add(db, settings, broker)  # the right token
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 20)
        assert len([k for k in broker.entities if ":WeatherObserved:" in k]) == 10


def test_context_option_is_required():
    from fleet.exports import ngsild
    from fleet.exports.adapter import ExportError

    with pytest.raises(ExportError, match="context"):
        ngsild.check("https://broker.example", {})


def test_a_broker_refusing_whole_batches_still_gets_the_good_nodes(db, settings,
                                                                  running):  # noqa: F811
    ingest(db, "n1", 1, 3)
    ingest(db, "bad", 1, 3)
    ingest(db, "n2", 1, 3)
    with NgsiLdBroker(TOKEN) as broker:
        broker.refuse_requests_with = {":bad"}
        add(db, settings, broker)
        running()
        assert wait_for(lambda: registry.get(db, "city")["behind"] == 0)
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 12)
        state = registry.get(db, "city")
        assert state["refused"] == 6 and state["last_error"] is None
        assert {k.split(":")[4] for k in broker.entities} == {"n1", "n2"}
        assert all("HTTP 400" in r["reason"] for r in registry.refused(db, "city"))


def event(db, node, seq, code, value, text, t):
    """One EVENT frame stored by the real ingest path."""
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.EVENT, seq, {"code": code, "value": value, "text": text}, t)
    ing = Ingest(db)
    ing.add(f"pl/v1/{node}/up", bytes(buf[:n]), time.time())
    ing.flush()


def test_events_become_device_state_instances_kept_per_code(db, settings, running):  # noqa: F811
    ingest(db, "n1", 1, 2)
    event(db, "n1", 10, 2, 0, "ds18x20: no device", 1_700_000_010)
    event(db, "n1", 11, 4, 3, "MemoryError: memory allocation failed", 1_700_000_011)
    with NgsiLdBroker(TOKEN) as broker:
        add(db, settings, broker)
        running()
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 6)
        state = broker.entities["urn:ngsi-ld:Device:polylink:n1"]["deviceState"]
        by_dataset = {s.get("datasetId"): s for s in state}
        assert by_dataset[None]["value"] in ("online", "offline")
        failed = by_dataset["urn:ngsi-ld:Dataset:polylink:event:2"]
        assert failed["value"] == "sensorFailed: ds18x20: no device"
        assert failed["observedAt"] == "2023-11-14T22:13:30.000Z"
        crashed = by_dataset["urn:ngsi-ld:Dataset:polylink:event:4"]
        assert crashed["value"] == "crashed: MemoryError: memory allocation failed"
        # A later event of one code replaces that code's instance only; readings in between
        # (a Device upsert without events) keep both.
        ingest(db, "n1", 20, 1)
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 8)
        event(db, "n1", 21, 2, 1, "", 1_700_000_030)
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 9)
        state = broker.entities["urn:ngsi-ld:Device:polylink:n1"]["deviceState"]
        by_dataset = {s.get("datasetId"): s for s in state}
        assert len(state) == 3
        assert by_dataset["urn:ngsi-ld:Dataset:polylink:event:2"]["value"] == "sensorFailed (1)"
        assert by_dataset["urn:ngsi-ld:Dataset:polylink:event:4"]["value"].startswith("crashed")
        # the broker expanded it: deviceState instances carry the core context's datasetId
        device = broker.expanded["urn:ngsi-ld:Device:polylink:n1"]
        (key,) = [k for k in device if k.endswith("/deviceState")]
        assert len(device[key]) == 2  # this upsert's default instance and the code-2 one
        assert "https://uri.etsi.org/ngsi-ld/datasetId" in set().union(*device[key])


def test_a_big_batch_goes_in_upserts_of_at_most_max_entities(db, settings, running,  # noqa: F811
                                                             monkeypatch):
    from fleet.exports import ngsild

    monkeypatch.setattr(ngsild, "MAX_ENTITIES", 7)
    ingest(db, "n1", 1, 20)  # 40 readings, one batch: 20 WeatherObserved and the Device
    with NgsiLdBroker(TOKEN) as broker:
        add(db, settings, broker)
        running()
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 40)
        assert broker.requests == 3  # 21 entities in 7 + 7 + 7
        assert len([k for k in broker.entities if ":WeatherObserved:" in k]) == 20


def test_after_a_failed_upsert_the_later_ones_wait_for_its_retry(
        db, settings, running, monkeypatch):  # noqa: F811
    # The sender builds the next upserts while one is in flight (ngsild.Sender.send). When one
    # fails, the ones built after it must not go out: they would arrive before its retry.
    from fleet.exports import ngsild

    monkeypatch.setattr(ngsild, "MAX_ENTITIES", 7)
    ingest(db, "n1", 1, 20)  # one batch of 21 entities: three upserts
    with NgsiLdBroker(TOKEN) as broker:
        broker.fail_requests = {2}
        add(db, settings, broker)
        running()
        assert wait_for(lambda: registry.get(db, "city")["delivered"] == 40)
        chunks = [ids for _status, ids in broker.log]
        first, second, third = chunks[0], chunks[1], chunks[-1]
        assert [status for status, _ids in broker.log] == [201, 503, 204, 201, 201]
        # the batch again from its start, in order, once the second upsert had failed
        assert chunks == [first, second, first, second, third]
        assert len(broker.entities) == 21
