"""node.py, sensors.py, status.py with a fake HAL: a sample becomes a queued TELEMETRY frame."""

import json

from _check import eq
from _fw import FakeBME280Bus, FakeDS, FakeHAL, board, rmtree, tmpdir
from polylink import config, proto
from polylink.drivers import ds18b20
from polylink.node import EV_SENSOR_FAILED, Node
from polylink.sensors import Schedule

ds18b20._CONVERSION_S = 0


def _node(d, bus=None, ds=None, adc=None):
    b = board()
    with open(d + "/config.json", "w") as f:
        json.dump({"node": "t-1", "mqtt": {"host": "h"}, "interval": 10}, f)
    hal = FakeHAL(
        d, b, i2c=bus or FakeBME280Bus(), ds=ds or FakeDS([19.5]), adc=adc or {35: 1855000}
    )
    return Node(hal, config.load(d, board=b)), hal


def _frames(node):
    buf = bytearray(proto.MAX_FRAME)
    got = []
    while True:
        n = node.store.peek(buf)
        if not n:
            return got
        got.append(proto.decode(bytes(buf[:n])))
        node.store.pop(node.store.head_idx)


async def test_sample_queues_one_telemetry_frame_with_every_sensor():
    d = tmpdir("node")
    try:
        node, hal = _node(d)
        await node.sample_once()
        f = _frames(node)
        eq(len(f), 1)
        mtype, seq, ts, body = f[0]
        eq((mtype, seq, ts), (proto.TELEMETRY, 0, 1767225600))
        got = dict(((q, i), v) for q, i, v in body)
        eq(got[(0, 0)], 25.1, "BME280 temperature at 0.1 degC")
        eq(got[(0, 1)], 19.5, "DS18B20 probe 1")
        eq(got[(2, 0)], 3.71, "battery")
        eq(got[(4, 0)], 100650, "pressure at 10 Pa")
    finally:
        rmtree(d)


async def test_failing_sensor_sends_one_event_and_the_rest_still_report():
    d = tmpdir("node")
    try:
        bus = FakeBME280Bus()
        node, hal = _node(d, bus=bus)
        bus.missing = True
        await node.sample_once()
        await node.sample_once()
        f = _frames(node)
        eq(
            [x[0] for x in f],
            [proto.EVENT, proto.TELEMETRY, proto.TELEMETRY],
            "one EVENT, not one per sample",
        )
        eq((f[0][3]["code"], f[0][3]["value"]), (EV_SENSOR_FAILED, 0))
        eq("bme280" in f[0][3]["text"], True)
        eq(sorted(set(q for q, i, v in f[1][3])), [0, 2], "DS18B20 and battery still read")
        bus.missing = False
        await node.sample_once()
        eq(len(_frames(node)[0][3]), 5, "the BME280 is reopened once it answers again")
        eq(node.sensors.failures, 2)
    finally:
        rmtree(d)


async def test_status_frame_reports_health_fields():
    d = tmpdir("node")
    try:
        node, hal = _node(d)
        hal.now += 5500
        node._tick()
        from polylink import status

        node.emit(proto.STATUS, status.body(node))
        mtype, seq, ts, b = _frames(node)[0]
        eq(mtype, proto.STATUS)
        eq(
            (b["fw"], b["uptime"], b["reset"], b["heap_free"], b["rssi"]),
            ("0.1.0", 5, 1, 54321, -61),
        )
        eq((b["queue"], b["dropped"], b["boots"], b["interval"]), (0, 0, 1, 10))
        eq("micropython" in b, False, "only the boot STATUS names the MicroPython")
        node.emit(proto.STATUS, status.body(node, True))
        eq(_frames(node)[0][3]["micropython"], "1.24.1", "the HAL's (1, 24, 1) as a string")
    finally:
        rmtree(d)


async def _reporter_frames(node, rounds):
    """Run the reporter for `rounds` STATUS periods; the STATUS bodies it queued."""
    import asyncio

    task = asyncio.create_task(node._reporter())
    for i in range(rounds):
        if i:
            node.status_schedule.set_interval(node.status_schedule.interval)  # next one due now
        for _ in range(3):
            await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    return [f[3] for f in _frames(node) if f[0] == proto.STATUS]


async def test_only_the_first_status_after_boot_names_the_micropython():
    d = tmpdir("node")
    try:
        node, hal = _node(d)
        hal.mpy_version = lambda: (1, 25, 0, "")  # sys.implementation.version has 4 items
        got = await _reporter_frames(node, 3)
        eq(len(got), 3)
        eq(got[0]["micropython"], "1.25.0")
        eq(["micropython" in b for b in got[1:]], [False, False])
    finally:
        rmtree(d)


async def test_a_boot_status_that_could_not_be_queued_is_sent_again_with_the_micropython():
    d = tmpdir("node")
    try:
        node, hal = _node(d)
        append = node.store.append
        calls = []

        def flaky(buf, n):
            calls.append(n)
            if len(calls) == 1:
                raise OSError(28)  # ENOSPC: the flash queue could not take it
            append(buf, n)

        node.store.append = flaky
        got = await _reporter_frames(node, 2)
        eq(node.store_errors, 1)
        eq(len(got), 1)
        eq(got[0]["micropython"], "1.24.1", "the next STATUS carries what the lost one had")
    finally:
        rmtree(d)


async def test_set_interval_persists_and_reboot_waits_for_the_queue():
    d = tmpdir("node")
    try:
        node, hal = _node(d)
        node.set_interval(25)
        eq(config.load(d, board=board()).interval, 25)
        eq(node.schedule.interval, 25)
        node.emit(proto.EVENT, {"code": 9})
        node.request_reboot()
        node._tick()
        eq(hal.resets, 0, "a frame is still waiting")
        _frames(node)
        node._tick()
        eq(hal.resets, 1)
    finally:
        rmtree(d)


async def test_watchdog_is_fed_only_while_sampling_progresses():
    d = tmpdir("node")
    try:
        node, hal = _node(d)
        node._tick()
        eq(hal.fed, 1)
        hal.now += 10 * 1000 + 61000
        node._tick()
        eq(hal.fed, 1, "sampling stalled: the watchdog must bite")
    finally:
        rmtree(d)


async def test_schedule_fires_at_once_then_per_interval():
    hal = FakeHAL("/", board())
    s = Schedule(hal, 2)
    await s.wait()
    eq(s._due, hal.now + 2000)
    hal.now += 2000
    await s.wait()
    eq(s._due, hal.now + 2000)
    hal.now += 60000  # a long stall: no burst of missed samples
    await s.wait()
    eq(s._due, hal.now + 2000)


async def test_full_flash_loses_the_frame_not_the_node():
    d = tmpdir("node")
    try:
        node, hal = _node(d)

        def full(buf, n):
            raise OSError(28, "ENOSPC")

        node.store.append = full
        await node.sample_once()
        eq(node.store_errors, 1)
        node._tick()
        eq(hal.fed, 1, "sampling still counts as progress")
    finally:
        rmtree(d)


async def test_downlinks_are_answered_and_commands_leave_the_heap_after():
    import sys

    d = tmpdir("node")
    try:
        node, hal = _node(d)
        buf = bytearray(32)
        n = proto.encode(buf, proto.COMMAND, 1, {"cid": 11, "cmd": 2, "arg": 5})
        node._on_message(node.link.down_topic, bytes(buf[:n]), False)
        node._on_message(node.link.down_topic, b"\xff\xff", False)
        node._on_message("pl/v1/other/down", bytes(buf[:n]), False)  # not ours: ignored
        f = _frames(node)
        eq([x[0] for x in f], [proto.RESULT, proto.EVENT])
        eq((f[0][3]["cid"], f[0][3]["code"]), (11, 0))
        eq((f[1][3]["code"], f[1][3]["value"]), (1, 1))
        eq((node.schedule.interval, node.bad_downlinks), (5, 1))
        if sys.implementation.name == "micropython":
            eq("polylink.commands" in sys.modules, False, "unloaded after the downlink")
    finally:
        rmtree(d)
