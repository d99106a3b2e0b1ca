"""The NGSI-LD mapping against the Smart Data Models' own metadata (pysmartdatamodels, offline):
every term we send expands (pyld) to the model's IRI, is an attribute of that model with the
NGSI type we give it, and carries the unit the model asks for."""

import pysmartdatamodels as sdm
import pytest
from ngsild_ld import expand
from polylink import quantities

from fleet.exports import ngsild, ngsild_terms
from fleet.exports.adapter import Batch, Item, Node
from fleet.exports.worker import reading_id
from fleet.nodes.senml import name_and_unit

NGSI = "https://uri.etsi.org/ngsi-ld/"
NODE = Node(id="n1", name="Marktplatz 4", firmware="1.4.0", online=True, lat=52.52, lon=13.405)
T = 1_700_000_000.0
# One reading of every registry quantity, at its registry value.
VALUES = {"temperature": 21.5, "humidity": 48.0, "pressure": 101325.0, "battery_level": 87,
          "battery_voltage": 3.71, "co2": 415, "pm2_5": 12.3, "pm10": 20.1, "illuminance": 300,
          "sound_level": 5.5, "wind_speed": 3.2, "wind_direction": 270}


def attributes():
    """{(model, attribute): metadata row} from pysmartdatamodels' attribute database."""
    out = {}
    for row in sdm.load_all_attributes():
        out.setdefault((row["dataModel"], row["property"]), row)
    return out


@pytest.fixture(scope="module")
def meta():
    return attributes()


def batch():
    items = []
    for qid, q in enumerate(quantities.QUANTITIES):
        if q[quantities.NAME] in VALUES:
            name, unit = name_and_unit(qid, 0)
            items.append(Item(id=reading_id("n1", qid, 0, T), kind="reading", node=NODE, t=T,
                              value=VALUES[name], qid=qid, inst=0, name=name, unit=unit))
    return Batch(items=tuple(items), nodes={"n1": NODE})


def test_every_term_is_the_models_attribute_with_its_ngsi_type(meta):
    for name, term in ngsild_terms.QUANTITIES.items():
        assert quantities.lookup(name) is not None, f"{name} is not in the registry"
        row = meta.get((term.model, term.attribute))
        assert row is not None, f"{term.model} has no attribute {term.attribute}"
        assert row["typeNGSI"] == "Property" and row["type"] == "number", row
        assert sdm.subject_for_datamodel(term.model) == [ngsild_terms.SUBJECTS[term.model]]


def test_units_and_scales_follow_the_models(meta):
    q = ngsild_terms.QUANTITIES
    assert meta[("WeatherObserved", "atmosphericPressure")]["units"] == "Hecto pascals"
    assert (q["pressure"].unit_code, q["pressure"].factor) == ("A97", 0.01)  # UN/CEFACT hPa
    assert meta[("WeatherObserved", "illuminance")]["units"] == "Lux"
    assert q["illuminance"].unit_code == "LUX"
    assert "between 0 and 1" in meta[("AirQualityObserved", "relativeHumidity")]["description"]
    assert (q["humidity"].unit_code, q["humidity"].factor) == ("C62", 0.01)
    assert "1.0 when battery is full" in meta[("Device", "batteryLevel")]["description"]
    assert q["battery_level"].factor == 0.01
    assert "CEFACT" in meta[("DeviceMeasurement", "unit")]["description"]


def test_payloads_expand_to_the_models_terms(meta):
    sent = ngsild.entities(batch())
    types = {e["type"] for e, _ in sent}
    assert types == {"Device", "WeatherObserved", "AirQualityObserved", "DeviceMeasurement"}
    checked = 0
    for entity, _items in sent:
        model = entity["type"]
        expanded = expand(entity)
        subject = ngsild_terms.SUBJECTS[model]
        assert expanded["@type"] == [f"https://smartdatamodels.org/{subject}/{model}"]
        assert expanded["@id"] == entity["id"] and entity["id"].startswith(f"urn:ngsi-ld:{model}:")
        for key, attr in entity.items():
            if key in ("id", "type"):
                continue
            iri = ngsild_terms.SDM + key if key in ("dateObserved", "name") else None
            row = meta[(model, key)]
            want = row["context"] if iri is None else iri
            assert want in expanded, f"{model}.{key} did not expand to {want}"
            assert attr["type"] == row["typeNGSI"], (model, key)
            (value,) = expanded[want]
            assert value["@type"] == [NGSI + attr["type"]]
            checked += 1
    assert checked >= 25


def test_values_are_in_the_models_units():
    by_type = {}
    for e, _ in ngsild.entities(batch()):
        by_type.setdefault(e["type"], []).append(e)
    (weather,) = by_type["WeatherObserved"]
    assert weather["relativeHumidity"]["value"] == 0.48
    assert weather["atmosphericPressure"] == {"type": "Property", "value": 1013.25,
                                              "unitCode": "A97",
                                              "observedAt": "2023-11-14T22:13:20.000Z"}
    assert weather["temperature"]["unitCode"] == "CEL"
    assert weather["refDevice"]["object"] == "urn:ngsi-ld:Device:polylink:n1"
    assert weather["location"]["value"] == {"type": "Point", "coordinates": [13.405, 52.52]}
    (air,) = by_type["AirQualityObserved"]
    assert (air["pm25"]["value"], air["pm25"]["unitCode"]) == (12.3, "GQ")
    (device,) = by_type["Device"]
    assert device["batteryLevel"]["value"] == 0.87
    assert device["firmwareVersion"]["value"] == "1.4.0"
    assert device["deviceState"]["value"] == "online"
    assert device["dateLastValueReported"]["value"]["@value"] == "2023-11-14T22:13:20.000Z"
    units = {e["controlledProperty"]["value"]: (e["numValue"]["value"], e["unit"]["value"])
             for e in by_type["DeviceMeasurement"]}
    assert units == {"battery_voltage": (3.71, "VLT"), "sound_level": (55.0, "2N")}


def test_the_same_reading_always_gives_the_same_entity_id():
    first = [e["id"] for e, _ in ngsild.entities(batch())]
    assert first == [e["id"] for e, _ in ngsild.entities(batch())]
    assert len(set(first)) == len(first)


def test_the_fleet_serves_the_context_it_links(client):
    r = client.get("/static/ngsi-ld-context.jsonld")
    assert r.status_code == 200 and r.mimetype == "application/ld+json"
    assert r.get_json(force=True) == ngsild_terms.context()  # regenerate the file if this fails


def test_events_are_device_state_instances_in_the_models_terms(meta):
    crash = Item(id="e:n1:5", kind="event", node=NODE, t=T + 1, value=3, code=4,
                 text="MemoryError: memory allocation failed")
    unknown = Item(id="e:n1:6", kind="event", node=NODE, t=T + 2, value=9, code=9, text=None)
    older = Item(id="e:n1:4", kind="event", node=NODE, t=T, value=1, code=4, text="older")
    sent = ngsild.entities(Batch(items=batch().items + (older, crash, unknown),
                                 nodes={"n1": NODE}))
    (device,) = [e for e, items in sent if e["type"] == "Device"]
    default, crashed, other = device["deviceState"]
    assert default == {"type": "Property", "value": "online"}
    assert crashed == {"type": "Property", "value": "crashed: MemoryError: memory allocation"
                       " failed", "observedAt": "2023-11-14T22:13:21.000Z",
                       "datasetId": "urn:ngsi-ld:Dataset:polylink:event:4"}
    assert other["value"] == "event9 (9)"
    row = meta[("Device", "deviceState")]
    assert row["typeNGSI"] == "Property" and "vendor dependent" in row["description"]
    (states,) = [v for k, v in expand(device).items() if k == row["context"]]
    datasets = sorted(s.get(NGSI + "datasetId", [{}])[0].get("@id", "") for s in states)
    assert datasets == ["", "urn:ngsi-ld:Dataset:polylink:event:4",
                        "urn:ngsi-ld:Dataset:polylink:event:9"]
    # every event of the batch counts as delivered with the Device
    (items,) = [items for e, items in sent if e["type"] == "Device"]
    assert {"e:n1:4", "e:n1:5", "e:n1:6"} <= {i.id for i in items}
