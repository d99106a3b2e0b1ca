"""Our LoRaWAN frames checked by an independent implementation, npm lora-packet, and back.

tests/mpy/lorapacket.mjs runs lora-packet (pinned in tests/mpy/package.json): it verifies MICs
and decrypts what polylink.lorawan.device builds, and builds downlinks and join-accepts that
polylink.lorawan.device must accept and decrypt to the same keys.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from polylink.lorawan import region as eu
from polylink.lorawan.device import Device, LoRaWANError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests/mpy/lorapacket.mjs"
NWK = "2B7E151628AED2A6ABF7158809CF4F3C"
APP = "000102030405060708090A0B0C0D0E0F"
ABP = {"dev_addr": "26011BDA", "nwk_s_key": NWK, "app_s_key": APP}
OTAA = {"dev_eui": "02A1B2C3D4E5F601", "join_eui": "70B3D57ED0000001",
        "app_key": "00112233445566778899AABBCCDDEEFF"}


def lora_packet(*ops):
    node = shutil.which("node")
    if node is None or not (ROOT / "tests/mpy/node_modules/lora-packet").is_dir():
        pytest.fail("node or lora-packet missing; run: make setup")
    out = subprocess.run([node, str(SCRIPT)], input=json.dumps(list(ops)), capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_uplinks_verify_and_decrypt_in_lora_packet(tmp_path):
    dev = Device(str(tmp_path / "lw"), ABP, eu)
    dev.request_link_check()
    frames = [dev.uplink(b"\x01\x02\x03", 5, confirmed=True), dev.uplink(bytes(range(40)), 1)]
    dev.fcnt_up = 0x1_0005  # past 16 bits: the MIC uses the full 32-bit counter (lora-packet
    # takes its upper bytes in air order, little-endian: "0100")
    frames.append(dev.uplink(b"hi", 7))
    got = lora_packet(*[{"op": "verify_data", "phy": f.hex(), "nwk": NWK, "app": APP,
                         "fcnt_msb": "0100" if i == 2 else "0000"} for i, f in enumerate(frames)])
    assert [g["mic_ok"] for g in got] == [True, True, True]
    assert got[0]["mtype"] == "Confirmed Data Up" and got[0]["devaddr"] == "26011bda"
    assert got[0]["fopts"] == "02" and got[0]["fport"] == 5 and got[0]["adr"]
    assert [g["payload"] for g in got] == ["010203", bytes(range(40)).hex(), b"hi".hex()]
    assert [g["fcnt"] for g in got] == [0, 1, 5]


def test_downlinks_built_by_lora_packet_are_accepted(tmp_path):
    dev = Device(str(tmp_path / "lw"), ABP, eu)
    built = lora_packet(
        {"op": "build_data", "mtype": "Unconfirmed Data Down", "devaddr": "26011bda", "fcnt": 0,
         "fport": 9, "payload": "c0ffee", "nwk": NWK, "app": APP},
        {"op": "build_data", "mtype": "Confirmed Data Down", "devaddr": "26011bda", "fcnt": 3,
         "fport": 0, "payload": "0600", "nwk": NWK, "app": APP},  # NB: lora-packet FPort 0
        {"op": "build_data", "mtype": "Unconfirmed Data Down", "devaddr": "26011bda", "fcnt": 4,
         "fport": 2, "fopts": "0800", "payload": "", "ack": True, "nwk": NWK, "app": APP},
    )
    assert dev.downlink(bytes.fromhex(built[0]["phy"])) == (9, b"\xc0\xff\xee", False)
    # FPort 0 (MAC commands encrypted with NwkSKey): DevStatusReq, then an unknown 0x00
    assert dev.downlink(bytes.fromhex(built[1]["phy"])) == (None, b"", False)
    assert dev.ack_pending
    fport, payload, ack = dev.downlink(bytes.fromhex(built[2]["phy"]))
    assert (fport, payload, ack) == (2, b"", True) and dev.s["delay"] == 1
    tampered = bytearray.fromhex(built[0]["phy"])
    tampered[9] ^= 0xFF
    with pytest.raises(LoRaWANError, match="MIC|replay"):
        dev.downlink(bytes(tampered))


def test_join_request_and_accept_against_lora_packet(tmp_path):
    dev = Device(str(tmp_path / "lw"), OTAA, eu)
    req = dev.join_request()
    checked, accept = lora_packet(
        {"op": "verify_join_request", "phy": req.hex(), "appkey": OTAA["app_key"]},
        {"op": "build_join_accept", "appnonce": "a1b2c3", "netid": "000013",
         "devaddr": "260b1234", "dlsettings": 0x23, "rxdelay": 5,
         "cflist": "184f84" "e85684" "b85e84" "000000" "000000" "00", "appkey": OTAA["app_key"],
         "devnonce": "0001"},
    )
    assert checked == {"mtype": "Join Request", "deveui": OTAA["dev_eui"].lower(),
                       "appeui": OTAA["join_eui"].lower(), "devnonce": "0001", "mic_ok": True}
    dev.join_accept(bytes.fromhex(accept["phy"]))
    assert dev.joined and dev.dev_addr == bytes.fromhex("260b1234")[::-1]
    assert dev.nwk_skey.hex() == accept["nwk"] and dev.app_skey.hex() == accept["app"]
    assert (dev.s["rx1o"], dev.s["rx2dr"], dev.s["delay"]) == (2, 3, 5)
    assert dev.s["ch"] == [868100000, 868300000, 868500000, 867100000, 867300000, 867500000]
    # the session is persisted: after a reboot the node is still joined with the same keys
    again = Device(str(tmp_path / "lw"), OTAA, eu)
    assert again.joined and again.app_skey.hex() == accept["app"]
    up = again.uplink(b"after reboot", 3)
    (v,) = lora_packet({"op": "verify_data", "phy": up.hex(), "nwk": accept["nwk"],
                        "app": accept["app"]})
    assert v["mic_ok"] and bytes.fromhex(v["payload"]) == b"after reboot"
    bad = bytearray.fromhex(accept["phy"])
    bad[5] ^= 1
    with pytest.raises(LoRaWANError, match="MIC"):
        Device(str(tmp_path / "other"), OTAA, eu).join_accept(bytes(bad))
