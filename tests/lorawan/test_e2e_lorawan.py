"""End to end over LoRaWAN: simulated nodes running the real firmware -> simulated radio and
gateways -> network-server emulators publishing as The Things Stack and as ChirpStack on a real
mosquitto -> the fleet's provider ingest -> SQLite -> the REST API; a command travels back.

The radio, the gateways and the network servers are simulations (firmware/host/simradio.py,
nsemu.py); the firmware, the broker, the fleet and the database are the real ones.
"""

import asyncio
import json
import os
import threading
import time
from pathlib import Path

from polylink import proto
from polylink_host.nsemu import NetworkServer
from polylink_host.sim import SimNode, sim_board, write_config
from polylink_host.simradio import Gateway, Medium, SimModem

from fleet import create_app
from fleet.nodes import commands as downlink
from fleet.providers import registry, worker
from fleet.settings import Settings
from fleet.store import commands as command_store
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import providers as provider_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db
from fleet.web.auth import create_token

OTAA = {"dev_eui": "02A1B2C3D4E5F601", "join_eui": "0000000000000000",
        "app_key": "00112233445566778899AABBCCDDEEFF"}
ABP = {"dev_eui": "02A1B2C3D4E5F602", "dev_addr": "26011BDA",
       "nwk_s_key": "2B7E151628AED2A6ABF7158809CF4F3C",
       "app_s_key": "000102030405060708090A0B0C0D0E0F"}


def lora_node(tmp_path: Path, broker, name, lorawan, policy, medium, pos, interval=4):
    root = tmp_path / name
    write_config(root, name, broker.host, broker.port, interval=interval, status_interval=600,
                 board=sim_board("HELTEC_V3"))
    cfg = json.loads((root / "config.json").read_text())
    cfg.update(lorawan=lorawan, link_policy=policy)
    (root / "config.json").write_text(json.dumps(cfg))
    sim = SimNode(name, root)
    sim.hal.modem = SimModem(medium, pos)
    return sim


async def until(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def fleet_with_providers(tmp_path, broker):
    settings = Settings(tmp_path / "data", 0, broker.port, None,
                        database_url=os.environ.get("DATABASE_URL"))  # --backend
    db = open_db(settings.db_path)
    for name, kind, app in (("ttn", "tts", "city"), ("cs", "chirpstack", "5f1d")):
        registry.add(db, settings.data_dir, {"name": name, "kind": kind, "host": broker.host,
                                             "port": broker.port, "application": app}, None)
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(settings, stop), daemon=True)
    t.start()
    return settings, db, stop, t


def test_lora_nodes_through_tts_and_chirpstack_to_the_api_and_a_command_back(tmp_path, mosquitto):
    settings, db, stop, wt = fleet_with_providers(tmp_path, mosquitto)
    identity_store.register_node(db, "lw-otaa", {"mqtt_user": "lw-otaa", "mqtt_hash": "x",
                                                 "dev_eui": OTAA["dev_eui"]})
    identity_store.register_node(db, "lw-abp", {"mqtt_user": "lw-abp", "mqtt_hash": "x",
                                                "dev_eui": ABP["dev_eui"]})
    results = {}

    async def scenario():
        medium = Medium()
        gw_ttn = Gateway(medium, "eui-aa555a0000000101", (0, 0))
        gw_cs = Gateway(medium, "cs-gw-1", (800, 0))
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city", gateways=[gw_ttn])
        cs = NetworkServer("chirpstack", mosquitto.host, mosquitto.port, "5f1d",
                           gateways=[gw_cs])
        tts.register_otaa(OTAA["dev_eui"], OTAA["app_key"], device_id="lw-otaa")
        # The ABP node is registered with the same session on both networks: its every uplink
        # reaches the fleet twice, once through each provider.
        for ns in (tts, cs):
            ns.register_abp(ABP["dev_eui"], ABP["dev_addr"], ABP["nwk_s_key"], ABP["app_s_key"])
        a = lora_node(tmp_path, mosquitto, "lw-otaa", OTAA, "lorawan", medium, (200, 0))
        b = lora_node(tmp_path, mosquitto, "lw-abp", ABP, "lorawan", medium, (400, 0))
        tasks = [asyncio.create_task(n.run()) for n in (a, b)]
        try:
            await until(lambda: telemetry_store.count_readings(db, "lw-otaa") > 0
                        and telemetry_store.count_frames(db, "lw-abp") >= 2, 60,
                        "telemetry via LoRaWAN")
            results["joins"] = tts.stats["joins"]
            cid = await asyncio.to_thread(downlink.send_command, db, settings, "lw-otaa",
                                          "set_interval", 7)
            results["cid"] = cid

            def answered():
                return command_store.get_command(db, "lw-otaa", cid).get("result_code") is not None

            await until(answered, 60, "the command's RESULT over LoRaWAN")
            results["interval"] = a.node.schedule.interval
            results["medium"] = dict(medium.stats)
            results["tts_published"] = [t for t, _ in tts.published]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tts.close()
            cs.close()

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        wt.join(10)
    assert results["joins"] == 1
    assert any(t.endswith("/join") for t in results["tts_published"])
    assert results["interval"] == 7  # the command reached the node through TTS and RX1
    cmd = command_store.get_command(db, "lw-otaa", results["cid"])
    assert cmd["result_code"] == 0 and cmd["result_value"] == 7
    node = node_store.get_node(db, "lw-otaa")
    assert node["provider"] == "ttn"
    # the ABP node's frames came through both providers, each stored once
    seqs = telemetry_store.frame_seqs(db, "lw-abp")
    assert len(seqs) == len(set(seqs)) >= 2
    rx = provider_store.receptions(db, "lw-abp", 200)
    both = {r["seq"] for r in rx if r["provider"] == "ttn"} & {
        r["seq"] for r in rx if r["provider"] == "cs"}
    assert both, "some frame was heard on both networks"
    # the REST API shows the telemetry and the radio metadata
    app = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "t"})
    client = app.test_client()
    h = {"Authorization": "Bearer " + create_token(db, "e2e", role="viewer")}
    tel = client.get("/api/v1/nodes/lw-otaa/telemetry", headers=h)
    assert tel.status_code == 200 and tel.json
    r = client.get("/api/v1/nodes/lw-otaa/receptions", headers=h).json
    first = r["receptions"][0]
    assert first["provider"] == "ttn" and first["gateway"] == "eui-aa555a0000000101"
    assert first["sf"] == 7 and first["dr"] == 5 and first["freq"] in (868100000, 868300000,
                                                                         868500000)
    assert -123 < first["rssi"] < -30 and first["airtime"] > 0.04
    assert {i["provider"] for i in r["identities"]} == {"ttn"}
    assert client.get("/api/v1/nodes/nope/receptions", headers=h).status_code == 404
    assert results["medium"]["delivered"] > 0
    assert proto.TELEMETRY == 0


def test_failover_wifi_to_lorawan_and_back_every_seq_stored_once(tmp_path, mosquitto):
    import os
    import subprocess
    import sys

    settings, db, stop, wt = fleet_with_providers(tmp_path, mosquitto)
    identity_store.register_node(db, "fo-1", {"mqtt_user": "fo-1", "mqtt_hash": "x",
                                              "dev_eui": OTAA["dev_eui"]})
    env = dict(os.environ, DATA_DIR=str(settings.data_dir), MQTT_PORT=str(mosquitto.port))
    env.pop("MQTT_URL", None)
    log = open(tmp_path / "ingest.log", "wb")  # noqa: SIM115
    ingest = subprocess.Popen([sys.executable, "-m", "fleet.cli", "ingest"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    out = {}

    def by_provider(p):
        return db.execute("SELECT count(*) FROM frames WHERE node_id = 'fo-1' AND direction ="
                          " 'up' AND provider = ?", [p]).fetchone()[0]

    async def scenario():
        medium = Medium()
        gw = Gateway(medium, "eui-aa555a0000000101", (0, 0))
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city", gateways=[gw])
        tts.register_otaa(OTAA["dev_eui"], OTAA["app_key"], device_id="fo-1")
        sim = lora_node(tmp_path, mosquitto, "fo-1", OTAA, "wifi_first", medium, (300, 0),
                        interval=2)
        # The ingest worker's session must exist before the node publishes (else the broker has
        # nobody to keep the first frames for).
        await until(lambda: b"connected to" in (tmp_path / "ingest.log").read_bytes(), 20,
                    "the ingest worker")
        await asyncio.sleep(0.5)
        task = asyncio.create_task(sim.run())
        try:
            await until(lambda: by_provider("mqtt") >= 3, 30, "frames over WiFi")
            await until(lambda: sim.node.lora_ready(), 30, "the LoRaWAN join")
            # on WiFi the LoRaWAN code leaves the heap; the outage brings it back, same session
            await until(lambda: sim.node.lora_parks >= 1, 30, "the LoRaWAN code parked")
            out["joins"] = tts.stats["joins"]
            sim.hal.set_wifi(False)  # the access point goes away mid-run
            await until(lambda: by_provider("ttn") >= 3, 60, "frames over LoRaWAN")
            out["queued_during_outage"] = sim.node.store.count
            sim.hal.set_wifi(True)
            mqtt_before = by_provider("mqtt")
            await until(lambda: by_provider("mqtt") > mqtt_before + 2, 40, "WiFi back")
            await until(lambda: sim.node.store.count == 0, 40, "the queue drained")
            out["lora_sent"] = sim.node.lora_sent
            out["joins_after"] = tts.stats["joins"]
            # the link's own count of join-accepts taken, kept while its code was parked
            lora = sim.node.lora
            out["node_joins"] = lora.joins if lora is not None else sim.node._lw_keep[1][6]
            out["parks"] = sim.node.lora_parks
            out["emitted"] = sim.node.seq.next
            await until(lambda: telemetry_store.count_frames(db, "fo-1") >= out["emitted"], 20,
                        "every frame stored")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            tts.close()

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        wt.join(10)
        ingest.terminate()
        ingest.wait(15)
        log.close()
    seqs = telemetry_store.frame_seqs(db, "fo-1")
    assert sorted(seqs) == list(range(out["emitted"])), "every seq stored, exactly once, none lost"
    assert by_provider("ttn") >= 3 and by_provider("mqtt") >= 6
    assert out["lora_sent"] >= 3 and out["queued_during_outage"] >= 1
    # A join-accept missed on a busy host makes the node ask again (the network counts two
    # joins, the node took one); no join may happen across the outage.
    assert out["joins"] >= 1 and out["joins_after"] == out["joins"], "a rejoin during the outage"
    assert out["node_joins"] == 1, "the parked session served: the node joined once"
    assert out["parks"] >= 2, "parked before the outage and again once WiFi was back"
    assert node_store.get_node(db, "fo-1")["provider"] == "mqtt"  # back on WiFi at the end


def test_confirmed_event_lost_then_retransmitted_is_stored_once(tmp_path, mosquitto):
    """An EVENT goes as a confirmed uplink. First its ACK is lost on the air: the node sends the
    same frame (same FCnt) again, the network ACKs it again but publishes it once. Then a first
    transmission itself is lost: the retransmission is the one that arrives."""
    settings, db, stop, wt = fleet_with_providers(tmp_path, mosquitto)
    identity_store.register_node(db, "lw-conf", {"mqtt_user": "lw-conf", "mqtt_hash": "x",
                                                 "dev_eui": ABP["dev_eui"]})
    out = {}

    def ups(tts):
        return [m["uplink_message"] for t, m in tts.published if t.endswith("/up")]

    async def scenario():
        medium = Medium()
        gw = Gateway(medium, "eui-aa555a0000000101", (0, 0))
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city", gateways=[gw])
        tts.register_abp(ABP["dev_eui"], ABP["dev_addr"], ABP["nwk_s_key"], ABP["app_s_key"])
        sim = lora_node(tmp_path, mosquitto, "lw-conf", ABP, "lorawan", medium, (300, 0),
                        interval=3600)
        task = asyncio.create_task(sim.run())
        try:
            await until(lambda: telemetry_store.count_frames(db, "lw-conf") >= 1, 60,
                        "the first reading")
            node = sim.node
            await until(lambda: node.store.count == 0, 60, "the queue empty")
            out["before"] = len(ups(tts))
            frames0 = telemetry_store.count_frames(db, "lw-conf")
            medium.lose_next(downlinks=1)  # the ACK of the next uplink never reaches the node
            out["ev1"] = node.emit(proto.EVENT, {"code": 9, "value": 1, "text": "door open"})
            await until(lambda: node.lora.acked == 1, 90, "the EVENT acknowledged")
            out["after_lost_ack"] = (node.lora.retransmissions, tts.stats["retransmissions"],
                                     len(ups(tts)), medium.stats["lost"])
            medium.lose_next(uplinks=1)  # the next uplink never reaches the gateway
            out["ev2"] = node.emit(proto.EVENT, {"code": 9, "value": 2, "text": "door shut"})
            await until(lambda: node.lora.acked == 2, 90, "the second EVENT acknowledged")
            await until(lambda: telemetry_store.count_frames(db, "lw-conf") >= frames0 + 2, 30,
                        "both EVENTs stored")
            out["after_lost_up"] = (node.lora.retransmissions, tts.stats["retransmissions"],
                                    len(ups(tts)), medium.stats["lost"])
            out["ups"] = ups(tts)
            out["acks"] = tts.stats["acks"]
            out["unacked"] = node.lora.unacked
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            tts.close()

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        wt.join(10)
    n = out["before"]  # the boot's reading and status, unconfirmed
    # lost ACK: one retransmission, seen by the network as one, published once
    assert out["after_lost_ack"] == (1, 1, n + 1, 1)
    # lost uplink: one more retransmission, which the network sees as the first
    assert out["after_lost_up"] == (2, 1, n + 2, 2)
    assert out["unacked"] == 0 and out["acks"] == 3  # the ACK lost, its repeat, the 2nd EVENT's
    assert [bool(u.get("confirmed")) for u in out["ups"]] == [False] * n + [True, True]
    fcnts = [u.get("f_cnt", 0) for u in out["ups"]]
    assert fcnts == sorted(set(fcnts)), "each FCnt published once"
    seqs = telemetry_store.frame_seqs(db, "lw-conf")
    assert sorted(seqs) == sorted(set(seqs)) and {out["ev1"], out["ev2"]} <= set(seqs)


def test_deep_sleep_keeps_the_session_and_fcnt_monotonic(tmp_path, mosquitto):
    """An OTAA node loses its RAM (deep sleep on the ESP32 ends in a reset; here: the node is
    stopped abruptly and booted again with the deep-sleep reset cause), twice. It goes on with
    the session in lorawan.json: no new join, FCnts keep rising, the network takes every frame."""
    from polylink_host.hal import DEEPSLEEP_RESET

    settings, db, stop, wt = fleet_with_providers(tmp_path, mosquitto)
    identity_store.register_node(db, "lw-sleep", {"mqtt_user": "lw-sleep", "mqtt_hash": "x",
                                                  "dev_eui": OTAA["dev_eui"]})
    out = {}

    def fcnts(tts):
        return [m["uplink_message"].get("f_cnt", 0) for t, m in tts.published
                if t.endswith("/up")]

    async def scenario():
        medium = Medium()
        gw = Gateway(medium, "eui-aa555a0000000101", (0, 0))
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city", gateways=[gw])
        tts.register_otaa(OTAA["dev_eui"], OTAA["app_key"], device_id="lw-sleep")
        sim = lora_node(tmp_path, mosquitto, "lw-sleep", OTAA, "lorawan", medium, (300, 0),
                        interval=3)
        task = asyncio.create_task(sim.run())
        try:
            for wake in range(3):
                n = len(fcnts(tts))
                await until(lambda n=n: len(fcnts(tts)) >= n + 2, 90, f"uplinks, wake {wake}")
                sim.power_cut()  # RAM gone mid-run, as at the start of a deep sleep
                await asyncio.gather(task, return_exceptions=True)
                out.setdefault("wakes", []).append(len(fcnts(tts)))
                sim.hal.cause = DEEPSLEEP_RESET
                task = asyncio.create_task(sim.run())
            await until(lambda: len(fcnts(tts)) >= out["wakes"][-1] + 1, 90, "the last wake")
            out["fcnts"] = fcnts(tts)
            # a frame sent just before a cut may go again after the wake (new FCnt, same seq)
            await until(lambda: telemetry_store.count_frames(db, "lw-sleep")
                        >= len(out["fcnts"]) - 3, 30, "the frames stored")
            out["joins"] = tts.stats["joins"]
            out["reset"] = sim.node.reset_cause
            out["emitted"] = sim.node.seq.next
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            tts.close()

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        wt.join(10)
    assert out["joins"] == 1, "one join: each wake took the saved session"
    assert out["reset"] == DEEPSLEEP_RESET
    f = out["fcnts"]
    assert f == sorted(set(f)), f"FCnt strictly rising across three wakes: {f}"
    assert len(f) >= out["wakes"][-1] + 1
    seqs = telemetry_store.frame_seqs(db, "lw-sleep")
    assert len(seqs) == len(set(seqs)) >= len(f) - 3, "each seq stored once"
