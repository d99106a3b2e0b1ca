"""A LoRaWAN node with power.sleep "deep" over several wake cycles: the real firmware on the host
port (deep sleep simulated as a reset that loses RAM), the simulated radio and network server,
the real mosquitto, provider ingest and SQLite."""

import asyncio
import json
import time

from polylink import proto
from polylink.lorawan import region
from polylink_host.nsemu import NetworkServer
from polylink_host.simradio import Gateway, Medium, SimModem
from test_e2e_lorawan import OTAA, fleet_with_providers, lora_node, until

from fleet.nodes import commands as downlink
from fleet.store import commands as command_store
from fleet.store import identity as identity_store
from fleet.store import telemetry as telemetry_store

SF_DR = {sf: dr for dr, (sf, bw) in enumerate(region.DATA_RATES) if bw == 125000}


class RecordingModem(SimModem):
    """The simulated radio, noting every transmission: (start s, freq Hz, dr, length)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.txs: list[tuple[float, int, int, int]] = []
        self.mhdrs: list[int] = []  # 0x00 join-request, 0x40/0x80 data uplinks

    async def send(self, packet, tx_at_ms=None) -> int:
        self.txs.append((time.monotonic(), int(self.cfg["freq_khz"] * 1000),
                         SF_DR[self.cfg["sf"]], len(packet)))
        self.mhdrs.append(packet[0])
        return await super().send(packet, tx_at_ms)


def test_sleeping_lora_node_keeps_fcnt_duty_cycle_and_gets_a_queued_command(tmp_path,
                                                                             mosquitto):
    settings, db, stop, wt = fleet_with_providers(tmp_path, mosquitto)
    identity_store.register_node(db, "lw-sleep", {"mqtt_user": "lw-sleep", "mqtt_hash": "x",
                                                  "dev_eui": OTAA["dev_eui"]})
    out = {}

    def ups(tts):
        return [m["uplink_message"] for t, m in tts.published if t.endswith("/up")]

    async def scenario():
        medium = Medium()
        gw = Gateway(medium, "eui-aa555a0000000101", (0, 0))
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city", gateways=[gw])
        tts.register_otaa(OTAA["dev_eui"], OTAA["app_key"], device_id="lw-sleep")
        sim = lora_node(tmp_path, mosquitto, "lw-sleep", OTAA, "lorawan", medium, (200, 0),
                        interval=7)
        cfg_path = tmp_path / "lw-sleep" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["power"] = {"sleep": "deep", "awake_max": 30, "linger": 0}
        cfg_path.write_text(json.dumps(cfg))
        modem = RecordingModem(medium, (200, 0))
        medium.modems.remove(sim.hal.modem)
        sim.hal.modem = modem
        task = asyncio.create_task(sim.run())
        try:
            await until(lambda: sim.hal.sleeps >= 3
                        and telemetry_store.count_frames(db, "lw-sleep") >= 3,
                        90, "three wakes with uplinks")
            # Class A: the command waits at the network server while the node sleeps and goes
            # down in RX1 after its next uplink; the RESULT comes up after that.
            await until(lambda: sim.hal.asleep, 30, "the node asleep")
            sleeps = sim.hal.sleeps
            out["asleep_at_send"] = sim.hal.asleep
            cid = await asyncio.to_thread(downlink.send_command, db, settings, "lw-sleep",
                                          "set_interval", 4)

            def answered():
                return command_store.get_command(db, "lw-sleep", cid).get("result_code") is not None

            await until(answered, 90, "the RESULT over LoRaWAN")
            out["cmd"] = command_store.get_command(db, "lw-sleep", cid)
            out["wakes_for_cmd"] = sim.hal.sleeps - sleeps
            await until(lambda: sim.hal.asleep, 30, "asleep again")
            n = telemetry_store.count_frames(db, "lw-sleep")
            await until(lambda: telemetry_store.count_frames(db, "lw-sleep") > n, 60,
                        "one more uplink")
            out["joins"] = tts.stats["joins"]
            out["fcnts"] = [u.get("f_cnt", 0) for u in ups(tts)]  # TTS leaves 0 out
            out["sleeps"] = sim.hal.sleeps
        except AssertionError:
            print("node state at the timeout:", sim.hal.sleeps,
                  telemetry_store.count_frames(db, "lw-sleep"), modem.txs[:8], tts.stats,
                  sim.node and sim.node.lora and sim.node.lora.last_error,
                  sim.node and sim.node.store.count, len(ups(tts)))
            raise
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            tts.close()
        out["txs"] = list(modem.txs)

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        wt.join(10)
    assert out["asleep_at_send"]
    assert out["joins"] == 1, "the session survived every sleep: joined once"
    assert out["sleeps"] >= 5
    fc = out["fcnts"]
    assert fc == sorted(set(fc)), f"FCnt strictly increasing across wakes: {fc}"
    assert fc == list(range(fc[0], fc[0] + len(fc))), f"no counter value skipped: {fc}"
    cmd = out["cmd"]
    assert cmd["result_code"] == 0 and cmd["result_value"] == 4
    seqs = telemetry_store.frame_seqs(db, "lw-sleep")
    assert sorted(seqs) == list(range(len(seqs))), "every seq stored once, none lost"
    # 1 % duty cycle per sub-band, across the sleeps: a band rests 99x the airtime after a frame
    last = {}
    for start, freq, dr, n in out["txs"]:
        band = region.band_of(freq)
        if band in last:
            t0, off = last[band]
            assert start - t0 >= off - 0.005, (
                f"sent {start - t0:.3f} s after the previous uplink on band {band};"
                f" its off time was {off:.3f} s")
        last[band] = (start, region.airtime_us(n, dr) * region.BANDS[band][2] / 1e9)
    assert proto.TELEMETRY == 0


def test_sleeping_wifi_first_node_waits_for_wifi_at_each_wake_instead_of_using_lorawan(
        tmp_path, mosquitto):
    # The LoRaWAN session is ready from flash the moment a wake starts; WiFi takes seconds. A
    # wifi_first node that had WiFi last time gives it a grace period rather than spend airtime.
    out = {}
    nodes = []  # each wake's Node object, RAM of the wakes gone by kept for the counts

    def note():
        if sim.node is not None and (not nodes or nodes[-1] is not sim.node):
            nodes.append(sim.node)
        return False

    async def scenario():
        medium = Medium()
        gw = Gateway(medium, "eui-aa555a0000000101", (0, 0))
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city", gateways=[gw])
        tts.register_otaa(OTAA["dev_eui"], OTAA["app_key"], device_id="wf-sleep")
        nonlocal sim
        sim = lora_node(tmp_path, mosquitto, "wf-sleep", OTAA, "wifi_first", medium, (200, 0),
                        interval=3)
        cfg_path = tmp_path / "wf-sleep" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["power"] = {"sleep": "deep", "awake_max": 20, "linger": 0}
        cfg_path.write_text(json.dumps(cfg))
        modem = RecordingModem(medium, (200, 0))
        medium.modems.remove(sim.hal.modem)
        sim.hal.modem = modem
        task = asyncio.create_task(sim.run())
        try:
            await until(lambda: note() or tts.stats["joins"] == 1, 40, "the join")
            joined_at = sim.hal.sleeps
            await until(lambda: note() or sim.hal.sleeps >= joined_at + 4, 60,
                        "four wakes after the join")
            out["uplinks"] = tts.stats["uplinks"]
            out["mhdrs"] = list(modem.mhdrs)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            tts.close()

    sim = None
    asyncio.run(scenario())
    assert out["uplinks"] == 0, "no data uplink over LoRaWAN while WiFi was there every wake"
    assert set(out["mhdrs"]) == {0x00}, "the radio sent join-requests only"
    assert len(nodes) >= 3  # (a short wake may fall between two polls)
    assert sum(n.lora_sent for n in nodes) == 0
    assert sum(n.sent for n in nodes) >= 3, "the readings went over MQTT"
