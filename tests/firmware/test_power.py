"""power.py with a fake HAL: what a wake writes before its deep sleep and what the next wake reads.

The host port runs whole wake cycles against a broker (tests/host/test_host_sleep.py); this runs
the bookkeeping under MicroPython too.
"""

import json

from _check import eq
from _fw import FakeBME280Bus, FakeDS, FakeHAL, board, rmtree, tmpdir
from polylink import config, proto
from polylink.drivers import ds18b20
from polylink.node import Node

ds18b20._CONVERSION_S = 0


class Slept(Exception):
    pass


class SleepyHAL(FakeHAL):
    def __init__(self, *a, **kw):
        FakeHAL.__init__(self, *a, **kw)
        self.slept = []

    def deepsleep(self, ms):
        self.slept.append(ms)
        self.cause = 4
        raise Slept()


def _boot(d, hal):
    return Node(hal, config.load(d, board=hal.board))


def _setup(d):
    b = board()
    with open(d + "/config.json", "w") as f:
        json.dump({"node": "t-1", "mqtt": {"host": "h"}, "interval": 10, "status_interval": 30,
                   "power": {"sleep": "deep"}}, f)
    return SleepyHAL(d, b, i2c=FakeBME280Bus(), ds=FakeDS([19.5]), adc={35: 1855000})


async def _sleep(node):
    try:
        await node.sleeper.sleep()
    except Slept:
        return
    raise AssertionError("sleep() returned instead of sleeping")


async def test_a_wake_carries_seq_and_the_status_clock_across_the_sleep():
    d = tmpdir("power")
    try:
        hal = _setup(d)
        node = _boot(d, hal)
        cyc = node.sleeper
        eq(cyc._status_due(0), True, "the first boot sends a STATUS")
        await node.schedule.wait()  # the first sample is due at once; the next at +10 s
        eq([node.emit(proto.EVENT, {"code": 9}) for _ in range(2)], [0, 1])
        cyc.since_status = 0  # a STATUS went at the start of this wake
        hal.now += 2000
        await _sleep(node)
        eq(hal.slept, [8000], "sleeps until the next sample is due")
        with open(d + "/power") as f:
            eq(f.read().split(), ["10000", "8000", "0"], "10 s since STATUS, slept 8 s, no WiFi")
        # the wake: RAM gone, the tick clock restarted, reset cause 4
        hal.now = 300
        node = _boot(d, hal)
        eq(node.seq.take(), 2, "the next seq, none skipped")
        eq(node.seq.boots, 1, "a wake is not a boot")
        cyc = node.sleeper
        eq((cyc.since_status, cyc.slept_ms, cyc.wifi_last), (10000, 8000, False))
        eq(cyc._status_due(0), False, "status_interval 30 s: not yet")
        eq(cyc._status_due(20000), True)
        # a reset that is not a wake sends a STATUS at once and does not trust the file
        hal.cause = 1
        node = _boot(d, hal)
        eq((node.sleeper.since_status, node.sleeper.slept_ms), (None, 0))
        eq(node.seq.boots, 2)
    finally:
        rmtree(d)


async def test_idle_only_once_sampled_and_sent_and_awake_for_reasons():
    d = tmpdir("power")
    try:
        hal = _setup(d)
        node = _boot(d, hal)
        cyc = node.sleeper
        eq(cyc.idle(), False, "not sampled yet")
        await node.sample_once()
        eq(cyc.idle(), False, "the reading is still queued")
        node.store.pop(node.store.head_idx)
        eq(cyc.idle(), True)
        eq(cyc.stay_awake(), "")
        node.request_reboot()
        eq(cyc.stay_awake(), "reboot")
        node._reboot_at = None
        node._blinking = True
        eq(cyc.stay_awake(), "identify")
    finally:
        rmtree(d)


async def test_a_status_that_could_not_be_queued_stays_due():
    d = tmpdir("power")
    try:
        hal = _setup(d)
        node = _boot(d, hal)
        await node.schedule.wait()
        await _sleep(node)  # since_status None: nothing went
        hal.now = 0
        node = _boot(d, hal)
        eq(node.sleeper._status_due(0), True)
    finally:
        rmtree(d)
