# Runs under MicroPython (tests/mpy/run.mjs script mode, top-level await allowed); started by
# bench_firmware_mem.py, which may prepend code that installs the app as .mpy files first.
# Prints one line "key value" per figure, in bytes.
import gc
import json
import os
import sys

gc.collect()
BASE = gc.mem_alloc()

import asyncio  # noqa: E402

from _fw import FakeBME280Bus, FakeDS, FakeHAL  # noqa: E402

gc.collect()
BASE_FAKES = gc.mem_alloc()

from polylink import config  # noqa: E402
from polylink.drivers import bme280, ds18b20  # noqa: E402
from polylink.node import Node  # noqa: E402

gc.collect()
gc.collect()
print("modules", gc.mem_alloc() - BASE_FAKES)


class OfflineHAL(FakeHAL):
    """The fake HAL with a real clock and no network: the node runs in store-and-forward mode."""

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, a, d):
        return time.ticks_add(a, d)

    def wifi_connect(self, ssid, pw):
        pass

    def wifi_isconnected(self):
        return False

    def wifi_rssi(self):
        return None

    def wdt_start(self, ms):
        pass


import time  # noqa: E402

ROOT = "/tmp/memprobe"
for d in ("/tmp", ROOT):
    try:
        os.mkdir(d)
    except OSError:
        pass
# The board the project ships (DevKitC: BME280 and DS18B20, no battery divider).
with open("/boards/ESP32_GENERIC.json") as f:
    b = json.load(f)
with open(ROOT + "/config.json", "w") as f:
    json.dump({"node": "mem-1", "mqtt": {"host": "h"}, "interval": 1, "queue_max": 1000}, f)
hal = OfflineHAL(ROOT, b, i2c=FakeBME280Bus(), ds=FakeDS([19.5, 20.25]))
ds18b20._CONVERSION_S = 0.01

gc.collect()
before_node = gc.mem_alloc()
node = Node(hal, config.load(ROOT, board=b))
gc.collect()
print("node", gc.mem_alloc() - before_node)


class _NoWait:
    """asyncio for the drivers during a measured cycle: sleep returns at once.

    The wasm port runs asyncio on the JS event loop and collects garbage when control passes
    through JS, even with gc.disable(); a cycle that never suspends is measured exactly.
    """

    @staticmethod
    async def sleep(s):
        pass


async def cycles(n):
    bme280.asyncio = ds18b20.asyncio = _NoWait
    worst = 0
    for _ in range(n):
        gc.collect()
        gc.disable()  # no collection inside the cycle: mem_alloc then counts every byte allocated
        a0 = gc.mem_alloc()
        await node.sample_once()
        used = gc.mem_alloc() - a0
        gc.enable()
        worst = max(worst, used)
    bme280.asyncio = ds18b20.asyncio = asyncio
    return worst


print("cycle_first", await cycles(1))  # noqa: F704 (run.mjs runs the script with top-level await)
print("cycle", await cycles(10))  # noqa: F704
print("queued", node.store.count)


async def steady(seconds):
    task = asyncio.create_task(node.run())
    await asyncio.sleep(seconds)
    gc.collect()
    resident = gc.mem_alloc() - BASE_FAKES
    task.cancel()
    await asyncio.sleep(0)
    return resident


print("resident_running", await steady(4))  # noqa: F704
gc.collect()
print("resident", gc.mem_alloc() - BASE_FAKES)
print("queued_after_run", node.store.count)
print("heap_total", gc.mem_alloc() + gc.mem_free())
print("schema_unloaded", int("polylink.configschema" not in sys.modules))
