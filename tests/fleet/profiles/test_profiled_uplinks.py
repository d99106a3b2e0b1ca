"""Other suppliers' LoRaWAN devices in the provider ingest (no network here; the emulator and
broker test is test_profiles_e2e.py): decoded by their profile, deduplicated by (node, FCnt)
across providers, FCnt resets accepted, bad codecs counted against their own node only."""

import base64
import json
from pathlib import Path

import pytest

from fleet.profiles import lpp, service
from fleet.providers import registry
from fleet.providers.worker import ProviderIngest
from fleet.store import audit as audit_store
from fleet.store import identity as identity_store
from fleet.store import profiles as profile_store
from fleet.store import telemetry as telemetry_store
from fleet.store.nodes import get_node

CODECS = Path(__file__).parent / "codecs"
WEATHER_FIELDS = [{"field": "air.temperature_f", "quantity": "temperature", "unit": "°F"},
                  {"field": "air.pressure_hpa", "quantity": "pressure", "unit": "hPa"},
                  {"field": "humidity_pct", "quantity": "humidity", "unit": "%"},
                  {"field": "battery_mv", "quantity": "battery_voltage", "unit": "mV"}]
EUIS = {"lpp-1": "70B3D57ED0000001", "wx-1": "70B3D57ED0000002", "bad-1": "70B3D57ED0000003",
        "loop-1": "70B3D57ED0000004"}


def tts(eui, fcnt, payload, fport=2, decoded=None):
    up = {"f_port": fport, "f_cnt": fcnt, "frm_payload": base64.b64encode(payload).decode(),
          "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1"}, "rssi": -80, "snr": 7}]}
    if decoded is not None:
        up["decoded_payload"] = decoded
    return (f"v3/city@ttn/devices/{eui.lower()}/up",
            json.dumps({"end_device_ids": {"device_id": eui.lower(), "dev_eui": eui},
                        "uplink_message": up}).encode())


def chirpstack(eui, fcnt, payload, fport=2):
    return (f"application/app/device/{eui.lower()}/event/up",
            json.dumps({"deviceInfo": {"devEui": eui.lower()}, "fCnt": fcnt, "fPort": fport,
                        "data": base64.b64encode(payload).decode(),
                        "rxInfo": [{"gatewayId": "cs-gw", "rssi": -90, "snr": 3}]}).encode())


@pytest.fixture
def fleet(db, tmp_path):
    for name, kind in (("ttn", "tts"), ("cs", "chirpstack")):
        registry.add(db, tmp_path, {"name": name, "kind": kind, "host": "127.0.0.1",
                                    "port": 1, "application": "app"}, "pw")
    for node, eui in EUIS.items():
        identity_store.register_node(db, node, {"mqtt_user": node, "mqtt_hash": "x",
                                                "dev_eui": eui})
    service.save(db, {"name": "lpp-sensor", "codec": "lpp", "interval": 900}, actor="alice")
    service.save(db, {"name": "acme-weather", "codec": "js", "fields": WEATHER_FIELDS,
                      "source": (CODECS / "vendor_weather.js").read_text()}, actor="alice")
    service.save(db, {"name": "broken", "codec": "js",
                      "source": (CODECS / "throws.js").read_text()})
    service.save(db, {"name": "looping", "codec": "js",
                      "source": (CODECS / "loops.js").read_text()})
    for node, profile in (("lpp-1", "lpp-sensor"), ("wx-1", "acme-weather"),
                          ("bad-1", "broken"), ("loop-1", "looping")):
        profile_store.assign(db, node, profile, actor="alice")
    return db


def values(db, node):
    return {(r["qid"], r["inst"]): round(r["value"], 3)
            for r in telemetry_store.latest_values(db, node)}


def test_lpp_and_vendor_codec_readings_stored_in_senml_units(fleet):
    w = ProviderIngest(fleet, "ttn", "tts")
    w.add_message(*tts(EUIS["lpp-1"], 5, lpp.encode([(1, 103, 21.5), (2, 115, 1013.2)])), 100.0)
    w.add_message(*tts(EUIS["wx-1"], 9, bytes.fromhex("02D227953010B8")), 100.0)
    w.flush()
    assert values(fleet, "lpp-1") == {(0, 1): 21.5, (4, 2): 101320.0}
    assert values(fleet, "wx-1") == {(0, 0): 22.333, (4, 0): 101330.0, (1, 0): 48.0,
                                     (2, 0): 4.28}
    assert get_node(fleet, "lpp-1")["interval"] == 900  # the offline alert's expectation
    assert len(profile_store.raw_payloads(fleet, "wx-1")) == 1


def test_bad_codecs_are_counted_on_their_node_and_the_rest_goes_on(fleet):
    w = ProviderIngest(fleet, "ttn", "tts")
    for fcnt in (1, 2):
        w.add_message(*tts(EUIS["bad-1"], fcnt, b"\x01\x02"), 100.0 + fcnt)
        w.add_message(*tts(EUIS["loop-1"], fcnt, b"\x01"), 100.0 + fcnt)
        w.add_message(*tts(EUIS["wx-1"], fcnt, bytes.fromhex("02D227953010B8")), 100.0 + fcnt)
    w.flush()
    bad = {(b["node_id"], b["error"]) for b in telemetry_store.bad_frames(fleet)}
    assert ("bad-1", "codec of profile broken: TypeError: cannot read byte 2 of the payload"
            ) in bad
    assert ("loop-1", "codec of profile looping: codec ran longer than 100 ms (interrupted)"
            ) in bad
    assert get_node(fleet, "bad-1")["bad_frames"] == 2
    assert get_node(fleet, "loop-1")["bad_frames"] == 2
    assert get_node(fleet, "wx-1")["bad_frames"] == 0
    assert telemetry_store.count_frames(fleet, "wx-1") == 2


def test_same_fcnt_through_two_providers_is_stored_once(fleet):
    a, b = ProviderIngest(fleet, "ttn", "tts"), ProviderIngest(fleet, "cs", "chirpstack")
    payload = lpp.encode([(1, 103, 20.0)])
    a.add_message(*tts(EUIS["lpp-1"], 70000, payload), 100.0)
    b.add_message(*chirpstack(EUIS["lpp-1"], 70000, payload), 100.5)
    a.flush()
    b.flush()
    b.add_message(*chirpstack(EUIS["lpp-1"], 70000, payload), 101.0)  # MQTT redelivery
    b.flush()
    assert telemetry_store.frame_seqs(fleet, "lpp-1") == [70000]  # 32 bits, not 16
    assert telemetry_store.count_readings(fleet, "lpp-1") == 1
    assert b.duplicates == 2


def test_fcnt_reset_after_rejoin_is_accepted_and_told(fleet):
    w = ProviderIngest(fleet, "ttn", "tts")
    for i, fcnt in enumerate((40, 41, 42)):
        w.add_message(*tts(EUIS["lpp-1"], fcnt, lpp.encode([(1, 103, 20.0 + i)])), 100.0 + i)
    w.flush()
    # The device rejoined ten minutes later: FCnt starts again from 0, then 1, 2.
    for i, fcnt in enumerate((0, 1, 2)):
        w.add_message(*tts(EUIS["lpp-1"], fcnt, lpp.encode([(1, 103, 30.0 + i)])), 700.0 + i)
    w.add_message(*tts(EUIS["lpp-1"], 1, lpp.encode([(1, 103, 31.0)])), 702.5)  # a duplicate
    w.flush()
    assert telemetry_store.count_readings(fleet, "lpp-1") == 6
    assert telemetry_store.frame_seqs(fleet, "lpp-1") == [40, 41, 42, 1 << 32, (1 << 32) + 1,
                                                          (1 << 32) + 2]
    assert values(fleet, "lpp-1") == {(0, 1): 32.0}
    events = telemetry_store.events(fleet, "lpp-1")
    assert len(events) == 1 and "FCnt reset" in events[0]["text"]
    # A new worker (restart) continues in the new life.
    w2 = ProviderIngest(fleet, "cs", "chirpstack")
    w2.add_message(*chirpstack(EUIS["lpp-1"], 2, lpp.encode([(1, 103, 32.0)])), 703.0)
    w2.flush()
    assert w2.duplicates == 1


def test_passthrough_of_the_providers_decoded_payload(fleet):
    service.save(fleet, {"name": "tts-formatter", "codec": "passthrough",
                         "fields": [{"field": "tempF", "quantity": "temperature",
                                     "unit": "°F"}]})
    profile_store.assign(fleet, "lpp-1", "tts-formatter")
    w = ProviderIngest(fleet, "ttn", "tts")
    w.add_message(*tts(EUIS["lpp-1"], 3, b"\x00", decoded={"tempF": 68}), 100.0)
    w.flush()
    assert values(fleet, "lpp-1") == {(0, 0): 20.0}


def test_codec_change_applies_to_new_frames_only_and_is_audited(fleet):
    w = ProviderIngest(fleet, "ttn", "tts")
    w.add_message(*tts(EUIS["bad-1"], 1, b"\x05"), 100.0)
    w.flush()
    service.save(fleet, {"name": "broken", "codec": "js", "source":
                         "function decodeUplink(i) { return {data: {co2: i.bytes[0] * 100}} }"},
                 actor="bob")
    w.devices.reload()
    w.add_message(*tts(EUIS["bad-1"], 2, b"\x05"), 101.0)
    w.flush()
    assert values(fleet, "bad-1") == {(6, 0): 500.0}
    assert len(telemetry_store.bad_frames(fleet, "bad-1")) == 1  # the old frame stays bad
    entry = audit_store.audit_log(fleet, target="broken")[0]
    assert entry["actor"] == "bob" and entry["action"] == "profile.update"
    assert json.loads(entry["detail"])["codec_changed"] is True
    tried = service.try_codec(fleet, {"codec": "lpp"}, ["0167FFD7"], node_id="bad-1")
    assert tried["pasted"][0]["readings"] == [{"quantity": 0, "name": "temperature",
                                               "unit": "Cel", "inst": 1, "value": -4.1}]
    assert len(tried["stored"]) == 2 and tried["bad"] == 2  # one byte is no LPP item


def test_raw_payloads_are_bounded_per_node(fleet):
    w = ProviderIngest(fleet, "ttn", "tts")
    for fcnt in range(profile_store.RAW_KEPT + 40):
        w.add_message(*tts(EUIS["lpp-1"], fcnt, lpp.encode([(1, 103, 1.0)])), 100.0 + fcnt)
    w.flush()
    kept = profile_store.raw_payloads(fleet, "lpp-1")
    assert len(kept) == profile_store.RAW_KEPT and kept[0]["fcnt"] == profile_store.RAW_KEPT + 39


def test_offline_alert_follows_the_profiles_interval(fleet):
    from fleet.store import alerts as alert_store

    w = ProviderIngest(fleet, "ttn", "tts")
    w.add_message(*tts(EUIS["lpp-1"], 1, lpp.encode([(1, 103, 20.0)])), 1000.0)
    w.flush()
    # lpp-sensor reports every 900 s: silent for 10 minutes is fine, for hours is offline.
    alert_store.evaluate_alerts(fleet, now=1000.0 + 600)
    assert not [a for a in alert_store.list_alerts(fleet) if a["node_id"] == "lpp-1"]
    alert_store.evaluate_alerts(fleet, now=1000.0 + 4 * 3600)
    offline = [a for a in alert_store.list_alerts(fleet) if a["node_id"] == "lpp-1"]
    assert [a["kind"] for a in offline] == ["offline"]
    assert "reports every 900 s" in offline[0]["detail"]
