"""Provider adapters fed with the providers' documented JSON shapes (fixtures/)."""

import base64
import json
from pathlib import Path

import pytest
from polylink import proto

from fleet.providers import ProviderError, chirpstack, tts

FIX = Path(__file__).parent / "fixtures"


def fixture(name) -> dict:
    return json.loads((FIX / name).read_text())


def test_tts_uplink_with_zero_counter_left_out_and_frequency_as_string():
    msg = fixture("tts_uplink.json")
    assert "f_cnt" not in msg["uplink_message"]  # TTS leaves out a frame counter of 0
    up = tts.parse_uplink("v3/polylink-city@ttn/devices/pl-lamp-7/up", json.dumps(msg).encode())
    assert (up.ext_id, up.device_id, up.fport, up.fcnt) == ("02A1B2C3D4E5F601", "pl-lamp-7", 1, 0)
    assert (up.sf, up.bw, up.dr, up.freq) == (7, 125000, 5, 868100000)
    assert up.airtime == pytest.approx(0.061696)
    assert [(r.gateway, r.rssi, r.snr) for r in up.receptions] == [
        ("eui-aa555a0000000101", -68, 9.2), ("city-hall-gw", -112, 0.0)]  # snr 0 left out
    mtype, seq, ts, body = proto.decode(up.payload)
    assert (mtype, seq, ts) == (proto.TELEMETRY, 5, 1764288000)


def test_tts_non_uplink_messages_and_bad_ones():
    join = {"end_device_ids": {"device_id": "d", "dev_eui": "02A1B2C3D4E5F601"},
            "join_accept": {"session_key_id": "AXBSH1Pk6Z0G166RlH16CQ=="}}
    assert tts.parse_uplink("v3/a@ttn/devices/d/up", json.dumps(join).encode()) is None
    msg = fixture("tts_uplink.json")
    msg["uplink_message"]["frm_payload"] = "***"
    with pytest.raises(ProviderError, match="frm_payload"):
        tts.parse_uplink("v3/a@ttn/devices/d/up", json.dumps(msg).encode())
    with pytest.raises(ProviderError, match="JSON"):
        tts.parse_uplink("v3/a@ttn/devices/d/up", b"{nope")
    msg = fixture("tts_uplink.json")
    del msg["end_device_ids"]["dev_eui"]
    with pytest.raises(ProviderError, match="dev_eui"):
        tts.parse_uplink("v3/a@ttn/devices/d/up", json.dumps(msg).encode())


def test_tts_topics_and_downlink_push():
    cfg = {"application": "polylink-city", "tenant": "ttn"}
    assert tts.subscriptions(cfg) == [("v3/polylink-city@ttn/devices/+/up", 1)]
    assert tts.downlink_topic(cfg, "pl-lamp-7") == \
        "v3/polylink-city@ttn/devices/pl-lamp-7/down/push"
    msg = json.loads(tts.downlink_message(b"\x84\x00\x01", 1))
    assert msg == {"downlinks": [{"f_port": 1, "frm_payload": "hAAB", "priority": "NORMAL"}]}


def test_chirpstack_uplink():
    msg = fixture("chirpstack_uplink.json")
    up = chirpstack.parse_uplink("application/x/device/02a1b2c3d4e5f601/event/up",
                                 json.dumps(msg).encode())
    assert (up.ext_id, up.device_id, up.fport, up.fcnt) == ("02A1B2C3D4E5F601",
                                                            "02a1b2c3d4e5f601", 1, 10)
    assert (up.sf, up.bw, up.dr, up.freq) == (7, 125000, 5, 868500000)
    assert [(r.gateway, r.rssi, r.snr) for r in up.receptions] == [("0016c001f153a14c", -36, 10.5)]
    assert up.airtime == pytest.approx(0.061696)  # 13-byte frame + 13 bytes of LoRaWAN at SF7
    assert proto.decode(up.payload)[1] == 5


def test_chirpstack_zero_fields_left_out():
    msg = fixture("chirpstack_uplink.json")
    for k in ("fCnt", "dr", "adr"):
        del msg[k]
    msg["txInfo"]["modulation"]["lora"]["spreadingFactor"] = 12
    up = chirpstack.parse_uplink("t", json.dumps(msg).encode())
    assert (up.fcnt, up.dr, up.sf, up.confirmed) == (0, 0, 12, False)
    msg["data"] = 5
    with pytest.raises(ProviderError, match="data"):
        chirpstack.parse_uplink("t", json.dumps(msg).encode())


def test_chirpstack_topics_and_downlink():
    cfg = {"application": "7b0cbe3c"}
    assert chirpstack.subscriptions(cfg) == [("application/7b0cbe3c/device/+/event/up", 1)]
    assert chirpstack.downlink_topic(cfg, "02A1B2C3D4E5F601") == \
        "application/7b0cbe3c/device/02a1b2c3d4e5f601/command/down"
    msg = json.loads(chirpstack.downlink_message(b"\x84\x00\x01", 1, dev_eui="02A1B2C3D4E5F601"))
    assert msg == {"devEui": "02a1b2c3d4e5f601", "confirmed": False, "fPort": 1,
                   "data": base64.b64encode(b"\x84\x00\x01").decode()}


def test_uplink_keys_are_the_providers_own_message_identity():
    msg = fixture("tts_uplink.json")
    up = tts.parse_uplink("v3/a@ttn/devices/d/up", json.dumps(msg).encode())
    assert up.uplink_key == "02A1B2C3D4E5F601/0/as:up:01HX6YGQ7E0V83YRZ7K4S5J4ZN"
    # Without an Application Server correlation id: the Network Server's reception time.
    msg["correlation_ids"] = ["gs:uplink:01HX6YGQ7AS3VTM5W5W36YV1F1"]
    up = tts.parse_uplink("v3/a@ttn/devices/d/up", json.dumps(msg).encode())
    assert up.uplink_key == "02A1B2C3D4E5F601/0/2026-11-28T13:42:11.412Z"
    del msg["correlation_ids"], msg["uplink_message"]["received_at"]
    assert tts.parse_uplink("v3/a@ttn/devices/d/up", json.dumps(msg).encode()).uplink_key is None
    msg["correlation_ids"] = "as:up:x"
    with pytest.raises(ProviderError, match="correlation_ids must be a list"):
        tts.parse_uplink("v3/a@ttn/devices/d/up", json.dumps(msg).encode())
    msg = fixture("chirpstack_uplink.json")
    up = chirpstack.parse_uplink("t", json.dumps(msg).encode())
    assert up.uplink_key == "02A1B2C3D4E5F601/10/3a5a2b7e-8f6b-4c5c-9d4b-2f3e4a5b6c7d"
    del msg["deduplicationId"]
    assert chirpstack.parse_uplink("t", json.dumps(msg).encode()).uplink_key is None
    msg["deduplicationId"] = 42
    with pytest.raises(ProviderError, match="deduplicationId must be a string"):
        chirpstack.parse_uplink("t", json.dumps(msg).encode())
