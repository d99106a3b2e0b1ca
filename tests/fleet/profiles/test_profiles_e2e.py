"""Other suppliers' devices end to end: simulated vendor devices (ABP, real LoRaWAN framing and
crypto) on a simulated radio, heard by a TTS and a ChirpStack network-server emulator (SIMULATION,
firmware/host/nsemu.py), published on a real mosquitto, taken in by the real provider worker.

Each device uses a codec we wrote for the purpose: Cayenne LPP, a vendor-style JS codec in °F,
hPa, % and mV, and JS codecs that throw, loop forever and allocate without end. The good devices'
readings arrive once each (two networks heard every frame) in SenML units; every frame of the bad
ones is a counted bad frame with the codec's own text, and the good ones are not held up.
"""

import asyncio
import threading
import time
from pathlib import Path

from polylink.lorawan import crypto
from polylink_host.nsemu import NetworkServer
from polylink_host.simradio import Gateway, Medium, SimModem

from fleet.profiles import lpp, service
from fleet.providers import registry, worker
from fleet.settings import Settings
from fleet.store import identity as identity_store
from fleet.store import profiles as profile_store
from fleet.store import providers as provider_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db
from fleet.store.nodes import get_node

CODECS = Path(__file__).parent / "codecs"
NWK = "2B7E151628AED2A6ABF7158809CF4F3C"
APP = "000102030405060708090A0B0C0D0E0F"
FIELDS = [{"field": "air.temperature_f", "quantity": "temperature", "unit": "°F"},
          {"field": "air.pressure_hpa", "quantity": "pressure", "unit": "hPa"},
          {"field": "humidity_pct", "quantity": "humidity", "unit": "%"},
          {"field": "battery_mv", "quantity": "battery_voltage", "unit": "mV"}]
# node -> (DevEUI, DevAddr, profile, codec source or None, payload of frame i)
DEVICES = {
    "lpp-dev": ("70B3D57ED0001001", "26011001", "lpp-sensor", None,
                lambda i: lpp.encode([(1, 103, 20.0 + i), (2, 104, 50.0), (3, 115, 1000.0)])),
    "wx-dev": ("70B3D57ED0001002", "26011002", "acme-weather", "vendor_weather.js",
               lambda i: bytes.fromhex("02D227953010B8")),
    "throw-dev": ("70B3D57ED0001003", "26011003", "throws", "throws.js", lambda i: b"\x01"),
    "loop-dev": ("70B3D57ED0001004", "26011004", "loops", "loops.js", lambda i: b"\x01"),
    "alloc-dev": ("70B3D57ED0001005", "26011005", "allocates", "allocates.js", lambda i: b"\x01"),
}
FRAMES = 3


def phy(dev_addr: str, fcnt: int, fport: int, payload: bytes) -> bytes:
    """An unconfirmed data uplink as a LoRaWAN 1.0.x device sends it (encrypted, with MIC)."""
    addr = bytes.fromhex(dev_addr)[::-1]
    buf = bytearray(bytes((0x40,)) + addr + bytes((0,)) + (fcnt & 0xFFFF).to_bytes(2, "little")
                    + bytes((fport,)) + payload)
    crypto.crypt_payload(bytes.fromhex(APP), 0, addr, fcnt, buf, 9, len(buf))
    return bytes(buf) + crypto.data_mic(bytes.fromhex(NWK), 0, addr, fcnt, bytes(buf))


def _until(pred, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_vendor_devices_through_two_network_servers_and_a_real_broker(tmp_path, mosquitto,
                                                                     database_url):
    settings = Settings(tmp_path, 0, mosquitto.port, None, database_url=database_url)
    db = open_db(settings.db_path)
    for name, kind, app in (("ttn", "tts", "city"), ("cs", "chirpstack", "5f1d")):
        registry.add(db, tmp_path, {"name": name, "kind": kind, "host": mosquitto.host,
                                    "port": mosquitto.port, "application": app}, "pw")
    service.save(db, {"name": "lpp-sensor", "codec": "lpp", "interval": 600})
    for node, (eui, _addr, profile, src, _p) in DEVICES.items():
        identity_store.register_node(db, node, {"mqtt_user": node, "mqtt_hash": "x",
                                                "dev_eui": eui})
        if src:
            service.save(db, {"name": profile, "codec": "js", "source": (CODECS / src).read_text(),
                              "fields": FIELDS if profile == "acme-weather" else []})
        profile_store.assign(db, node, profile)
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(settings, stop), daemon=True)
    t.start()

    async def radio():
        medium = Medium()
        gws = [Gateway(medium, "eui-aa555a0000000101", (0, 0)), Gateway(medium, "cs-gw", (50, 0))]
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city", gateways=[gws[0]])
        cs = NetworkServer("chirpstack", mosquitto.host, mosquitto.port, "5f1d",
                           gateways=[gws[1]])
        try:
            modems = {}
            for node, (eui, addr, *_rest) in DEVICES.items():
                for ns in (tts, cs):
                    ns.register_abp(eui, addr, NWK, APP)
                modems[node] = SimModem(medium, (20, 0))
                modems[node].configure({"freq_khz": 868100, "sf": 7, "bw": "125"})
            await asyncio.sleep(1.0)  # the worker's subscriptions are in place
            for i in range(FRAMES):
                for node, (_eui, addr, _prof, _src, payload) in DEVICES.items():
                    await modems[node].send(phy(addr, i + 1, 2, payload(i)))
                    await asyncio.sleep(0.3)  # past the emulator's dedup window
            await asyncio.sleep(0.5)
            return tts.stats["uplinks"], cs.stats["uplinks"]
        finally:
            tts.close()
            cs.close()

    try:
        heard = asyncio.run(radio())
        assert heard == (FRAMES * len(DEVICES),) * 2
        assert _until(lambda: telemetry_store.count_frames(db, "wx-dev") == FRAMES
                      and telemetry_store.count_frames(db, "lpp-dev") == FRAMES
                      and all(get_node(db, n)["bad_frames"] == 2 * FRAMES
                              for n in ("throw-dev", "loop-dev", "alloc-dev")))
    finally:
        stop.set()
        t.join(15)
    assert not t.is_alive()
    latest = {(r["qid"], r["inst"]): round(r["value"], 3)
              for r in telemetry_store.latest_values(db, "wx-dev")}
    assert latest == {(0, 0): 22.333, (4, 0): 101330.0, (1, 0): 48.0, (2, 0): 4.28}
    lpp_latest = {(r["qid"], r["inst"]): r["value"]
                  for r in telemetry_store.latest_values(db, "lpp-dev")}
    assert lpp_latest == {(0, 1): 22.0, (1, 2): 50.0, (4, 3): 100000.0}
    assert telemetry_store.count_readings(db, "lpp-dev") == 3 * FRAMES  # once, not per network
    assert {r["provider"] for r in provider_store.receptions(db, "lpp-dev")} == {"ttn", "cs"}
    errors = {(b["node_id"], b["error"].split(": ", 1)[1])
              for b in telemetry_store.bad_frames(db, limit=1000)}
    assert errors == {("throw-dev", "TypeError: cannot read byte 1 of the payload"),
                      ("loop-dev", "codec ran longer than 100 ms (interrupted)"),
                      ("alloc-dev", "codec used more than 16 MB (out of memory)")}
    assert get_node(db, "wx-dev")["bad_frames"] == 0
    db.conn.close()
