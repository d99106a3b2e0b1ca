"""power.sleep "deep" on the host port against a real mosquitto: the simulator powers the node
down (RAM gone, flash kept) and boots it with reset cause 4 after the time asked for."""

import asyncio
import json
import time

from _host_harness import Listener, sim_node, until
from polylink import commands, proto
from polylink.ota import agent as ota_mod
from polylink.ota import slots
from polylink_host.hal import DEEPSLEEP_RESET

SLEEP = {"sleep": "deep", "awake_max": 8, "linger": 1}


def test_wakes_send_each_frame_once_with_seqs_in_order_and_status_when_due(mosquitto, tmp_path):
    lst = Listener(mosquitto)
    out = {}

    async def scenario():
        sim = sim_node(tmp_path, mosquitto, "s-cyc", interval=2, status_interval=10, power=SLEEP)
        task = asyncio.create_task(sim.run())
        try:
            await until(lambda: sim.hal.sleeps >= 6, 60, "six deep sleeps")
            out["asleep_ms"] = sim.hal.slept_ms
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        out["sleeps"] = sim.hal.sleeps

    asyncio.run(scenario())
    lst.close()
    frames = lst.frames("s-cyc")
    seqs = [f[1] for f in frames]
    assert seqs == list(range(len(seqs))), "every seq once, in order, none skipped by a sleep"
    tel = lst.frames("s-cyc", proto.TELEMETRY)
    assert len(tel) >= out["sleeps"], "one reading per wake"
    st = [f[3] for f in lst.frames("s-cyc", proto.STATUS)]
    # status_interval 10 s with a wake every 2 s: the first boot's, then one in ~5 wakes
    assert 1 <= len(st) <= 1 + out["sleeps"] // 3, (len(st), out["sleeps"])
    assert st[0]["reset"] == 1 and "micropython" in st[0]
    for s in st[1:]:
        assert s["reset"] == DEEPSLEEP_RESET and "micropython" not in s
    assert all(s["boots"] == 1 for s in st), "wakes are not counted as boots"
    # DISCONNECT before each sleep: the broker never published the will
    conn = lst.conn("s-cyc")
    assert b"0" not in conn[:-1], conn  # (the last may be the will of the test's power cut)
    assert out["asleep_ms"] >= out["sleeps"] * 1000


def test_a_command_sent_while_the_node_sleeps_is_answered_after_the_wake(mosquitto, tmp_path):
    lst = Listener(mosquitto)
    out = {}

    def results():
        return [f[3] for f in lst.frames("s-cmd", proto.RESULT)]

    async def scenario():
        sim = sim_node(tmp_path, mosquitto, "s-cmd", interval=3, status_interval=600,
                       power=SLEEP)
        task = asyncio.create_task(sim.run())
        try:
            await until(lambda: sim.hal.asleep, 30, "the first deep sleep")
            sleeps = sim.hal.sleeps
            # The broker holds it in the node's persistent session (Class A semantics on MQTT).
            await asyncio.to_thread(lst.send, "s-cmd", proto.COMMAND,
                                    {"cid": 7, "cmd": commands.SET_INTERVAL, "arg": 4})
            out["sent_asleep"] = sim.hal.asleep
            await until(lambda: results(), 30, "the RESULT")
            out["wakes_before_result"] = sim.hal.sleeps - sleeps
            await until(lambda: sim.hal.sleeps > sleeps + 1, 30, "one more sleep")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    lst.close()
    assert out["sent_asleep"]
    assert results() == [{"cid": 7, "code": 0, "value": 4, "text": "interval 4 s"}]
    assert json.loads((tmp_path / "s-cmd" / "config.json").read_text())["interval"] == 4
    seqs = [f[1] for f in lst.frames("s-cmd")]
    assert seqs == list(range(len(seqs)))


def test_a_node_on_ota_trial_stays_awake_until_it_confirmed_its_health(mosquitto, tmp_path):
    lst = Listener(mosquitto)
    out = {}
    root = tmp_path / "s-ota"

    async def scenario():
        sim = sim_node(tmp_path, mosquitto, "s-ota", interval=2, status_interval=600,
                       power=SLEEP, ota={"confirm": 3})
        (root / "a").mkdir()
        (root / "a" / "manifest.json").write_text("{}")
        slots.switch(str(root), "a", "0.1.0", None)  # booted on trial
        assert slots.read(str(root))["trial"]
        t0 = time.monotonic()
        task = asyncio.create_task(sim.run())
        try:
            await until(lambda: sim.hal.sleeps >= 1, 40, "the first sleep")
            out["trial_after"] = slots.read(str(root))["trial"]
            out["awake_s"] = time.monotonic() - t0
            await until(lambda: sim.hal.sleeps >= 3, 30, "two more sleeps")
            out["still_confirmed"] = not slots.read(str(root))["trial"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    lst.close()
    assert out["trial_after"] == 0, "it slept only after the trial was confirmed"
    assert out["still_confirmed"]
    ota = [f[3] for f in lst.frames("s-ota", proto.OTA_UP)]
    assert [(o["state"], o["version"]) for o in ota] == [(ota_mod.CONFIRMED, "0.1.0")], ota
    assert out["awake_s"] >= 3, "awake for the whole confirm time, though the interval is 2 s"
    # awake through the 3 s trial, past several sample intervals: more than one reading
    tel = lst.frames("s-ota", proto.TELEMETRY)
    assert len(tel) >= 2
