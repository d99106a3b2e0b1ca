"""SenML (RFC 8428) ingest: resolution per the RFC, JSON and CBOR, the same mapping to
quantities, exactly-once storage, over MQTT (the ingest worker) and HTTPS (supplier tokens)."""

import json

import cbor2
import pytest

from fleet.ingest import Ingest
from fleet.profiles import service
from fleet.senml import intake
from fleet.senml import records as senml
from fleet.store import identity as identity_store
from fleet.store import profiles as profile_store
from fleet.store import telemetry as telemetry_store

# RFC 8428 section 5.1.2's shape: a base name, base time and base unit shared by the records.
PACK = [{"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e9, "bu": "%RH", "v": 20,
         "n": "humidity"},
        {"u": "lon", "v": 24.30621, "n": "longitude"},
        {"u": "lat", "v": 60.07965, "n": "latitude"},
        {"t": 60, "v": 20.3, "n": "humidity"},
        {"u": "Cel", "t": 120, "v": 21.5, "n": "temperature"},
        {"vs": "on", "n": "relay"}]


def test_resolution_of_base_fields():
    records, skipped = senml.resolve(PACK, now=2e9)
    assert records[0] == ("urn:dev:ow:10e2073a01080063:humidity", "%RH", 20.0, 1.320067464e9)
    assert records[3][3] == 1.320067464e9 + 60 and records[3][1] == "%RH"
    assert records[4][1:] == ("Cel", 21.5, 1.320067464e9 + 120)
    assert skipped == ["urn:dev:ow:10e2073a01080063:relay: only numeric values become readings"]


def test_relative_times_and_base_value():
    records, _ = senml.resolve([{"bn": "n1/", "bv": 100, "n": "co2", "v": 5, "t": -10}], 1e9)
    assert records == [("n1/co2", None, 105.0, 1e9 - 10)]


def test_cbor_uses_the_rfcs_integer_labels():
    pack = cbor2.dumps([{-2: "dev1:", -3: 1.7e9, 0: "temperature", 1: "degF", 2: 212}])
    records, _ = senml.resolve(senml.parse(pack), 0)
    got, _ = senml.readings(records)
    assert got == [(0, 0, pytest.approx(100.0), 1.7e9, "dev1:temperature")]


@pytest.mark.parametrize("payload, why", [
    (b"", "empty"), (b"[]", "non-empty array"), (b"{", "neither SenML JSON nor CBOR"),
    (b'[{"n": "x"}]', "has no value"), (b'[{"n": "a b", "v": 1}]', "not a valid SenML name"),
    (b'[{"bver": 11, "n": "x", "v": 1}]', "newer than version 10"),
    (b'[{"n": "x", "v": "1"}]', "must be a finite number"),
    (b'[{"n": "x", "v": 1, "new_": 2}]', "must be understood")])
def test_bad_packs_say_why(payload, why):
    with pytest.raises(senml.SenmlError, match=why):
        senml.resolve(senml.parse(payload), 0)


def test_mqtt_senml_stored_exactly_once(db):
    w = Ingest(db)
    body = json.dumps(PACK).encode()
    w.add("pl/v1/weather-7/senml", body, 1e9)
    w.add("pl/v1/weather-7/senml", body, 1e9 + 1)  # redelivered
    w.add("pl/v1/weather-7/senml", b"[{\"n\": 1}]", 1e9 + 2)
    w.flush()
    latest = {(r["qid"], r["inst"]): r["value"] for r in telemetry_store.latest_values(
        db, "weather-7")}
    assert latest == {(1, 0): 20.3, (18, 0): 24.30621, (17, 0): 60.07965, (0, 0): 21.5}
    assert telemetry_store.count_readings(db, "weather-7") == 5
    assert w.duplicates == 5
    assert "SenML: record 0: n must be a string" in telemetry_store.bad_frames(db)[0]["error"]


def test_senml_profile_maps_vendor_names_and_units(db):
    identity_store.register_node(db, "wx", {"mqtt_user": "wx", "mqtt_hash": "x"})
    service.save(db, {"name": "vendor-senml", "codec": "senml", "fields": [
        {"field": "tempF", "quantity": "temperature", "unit": "degF"},
        {"field": "baro", "quantity": "pressure", "unit": "hPa"}]})
    profile_store.assign(db, "wx", "vendor-senml")
    w = Ingest(db)
    w.add("pl/v1/wx/senml", json.dumps([{"bn": "wx:", "bt": 1.7e9, "n": "tempF", "v": 50},
                                        {"n": "baro", "v": 1000}]).encode(), 1.7e9)
    w.flush()
    got = {r["qid"]: round(r["value"], 3) for r in telemetry_store.latest_values(db, "wx")}
    assert got == {0: 10.0, 4: 100000.0}


def test_https_supplier_token_writes_only_its_own_nodes(client, db):
    for node in ("acme-1", "other-1"):
        identity_store.register_node(db, node, {"mqtt_user": node, "mqtt_hash": "x"})
    acme = intake.add_supplier(db, "acme")
    intake.add_supplier(db, "other")
    profile_store.set_supplier(db, "acme-1", "acme")
    profile_store.set_supplier(db, "other-1", "other")
    h = {"Authorization": f"Bearer {acme}", "Content-Type": "application/senml+json"}
    body = json.dumps([{"bt": 1.7e9, "n": "co2", "v": 612}])
    r = client.post("/api/v1/ingest/senml?node=acme-1", data=body, headers=h)
    assert r.status_code == 200 and r.json["stored"] == 1
    r = client.post("/api/v1/ingest/senml?node=acme-1", data=body, headers=h)
    assert r.json == {"node_id": "acme-1", "stored": 0, "duplicates": 1, "skipped": []}
    r = client.post("/api/v1/ingest/senml?node=other-1", data=body, headers=h)
    assert r.status_code == 403 and telemetry_store.count_readings(db, "other-1") == 0
    cbor = cbor2.dumps([{-3: 1.7e9 + 60, 0: "co2", 2: 640}])
    r = client.post("/api/v1/ingest/senml?node=acme-1", data=cbor,
                    headers=dict(h, **{"Content-Type": "application/senml+cbor"}))
    assert r.json["stored"] == 1
    assert client.post("/api/v1/ingest/senml?node=acme-1", data=body).status_code == 401
    r = client.post("/api/v1/ingest/senml?node=acme-1", data=body,
                    headers={"Authorization": "Bearer pls_guess"})
    assert r.status_code == 401
    r = client.post("/api/v1/ingest/senml?node=acme-1", data=b"[1]", headers=h)
    assert r.status_code == 400 and "record 0 is not an object" in r.json["error"]


def test_senml_dedupe_keys_are_pruned_with_the_readings(db):
    from fleet.store import upkeep as upkeep_store

    w = Ingest(db)
    w.add("pl/v1/old-1/senml", json.dumps([{"bt": 3200.0 * 86400, "n": "co2", "v": 1},
                                           {"bt": 3300.0 * 86400, "n": "co2", "v": 2}]).encode(),
          3300.0 * 86400)
    w.flush()
    assert upkeep_store.prune_old(db, "senml_seen", 3250.0 * 86400) == 1
    assert upkeep_store.prune_old(db, "readings", 3250.0 * 86400) == 1
    assert telemetry_store.count_readings(db, "old-1") == 1
