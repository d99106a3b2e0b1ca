# Runs under MicroPython (tests/mpy/run.mjs script mode, top-level await allowed); started by
# bench_lorawan.py. A WiFi + LoRaWAN node (Heltec WiFi LoRa 32 V2, link_policy wifi_first, an ABP
# session) runs on WiFi against an in-memory broker, then WiFi goes away and it runs on LoRaWAN
# over a fake radio. argv[1]: "both" keeps both links' code loaded (Node.active_link_only off,
# as before), "active" the default. Prints "key value" lines, in bytes.
import gc
import json
import os
import sys
import time

gc.collect()
BASE = gc.mem_alloc()

import asyncio  # noqa: E402

import cryptolib  # noqa: E402, F401  (built into the ESP32 build; a .py stand-in on wasm)
from _fw import FakeHAL, Pipe  # noqa: E402


class AutoBroker(Pipe):
    """An MQTT 3.1.1 broker in memory: CONNACK, SUBACK, PUBACK and PINGRESP as packets arrive."""

    def write(self, b):
        self.tx += bytes(b)
        while len(self.tx) >= 2:
            n, mul, i = 0, 1, 1
            while True:
                if i >= len(self.tx):
                    return
                c = self.tx[i]
                n += (c & 0x7F) * mul
                mul <<= 7
                i += 1
                if not c & 0x80:
                    break
            if len(self.tx) < i + n:
                return
            t, body = self.tx[0], self.tx[i : i + n]
            self.tx = self.tx[i + n :]
            if t == 0x10:
                self.feed(b"\x20\x02\x00\x00")
            elif t == 0x82:
                self.feed(bytes((0x90, 3, body[0], body[1], 1)))
            elif t & 0xF0 == 0x30 and t & 0x06:
                k = (body[0] << 8 | body[1]) + 2
                self.feed(bytes((0x40, 2, body[k], body[k + 1])))
            elif t == 0xC0:
                self.feed(b"\xd0\x00")


class Radio:
    """The micropython-lib lora AsyncModem API with nothing on the air: windows stay quiet."""

    def configure(self, cfg):
        pass

    async def send(self, phy):
        return time.ticks_ms()

    async def recv(self, timeout_ms=None):
        await asyncio.sleep_ms(timeout_ms or 0)

    def standby(self):
        pass


class DualHAL(FakeHAL):
    wifi = True
    conns = []

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, a, d):
        return time.ticks_add(a, d)

    def wifi_connect(self, ssid, pw):
        pass

    def wifi_isconnected(self):
        return self.wifi

    def wifi_rssi(self):
        return -60 if self.wifi else None

    def wdt_start(self, ms):
        pass

    def lora_modem(self):
        return Radio()

    async def open_connection(self, host, port, tls=None):
        if not self.wifi:
            raise OSError("no WiFi")
        p = AutoBroker()
        self.conns.append(p)
        return p, p


gc.collect()
BASE_FAKES = gc.mem_alloc()

from polylink import config  # noqa: E402
from polylink.node import Node  # noqa: E402

Node.active_link_only = sys.argv[1] != "both"
ROOT = "/tmp/dualprobe"
for d in ("/tmp", ROOT):
    try:
        os.mkdir(d)
    except OSError:
        pass
for name in os.listdir(ROOT):
    os.remove(ROOT + "/" + name)
with open("/boards/HELTEC_WIFI_LORA_32_V2.json") as f:
    b = json.load(f)
with open(ROOT + "/config.json", "w") as f:
    json.dump({"node": "mem-2", "mqtt": {"host": "h"}, "interval": 1, "queue_max": 1000,
               "link_policy": "wifi_first",
               "lorawan": {"dev_eui": "02A1B2C3D4E5F602", "dev_addr": "26011BDA",
                           "nwk_s_key": "2B7E151628AED2A6ABF7158809CF4F3C",
                           "app_s_key": "000102030405060708090A0B0C0D0E0F"}}, f)
hal = DualHAL(ROOT, b, adc={37: 1160000})
node = Node(hal, config.load(ROOT, board=b))


def loaded():
    return " ".join(sorted(m[9:] for m in sys.modules if m.startswith("polylink.")))


async def settled():
    """Heap in use after garbage collection. The wasm port frees only what it collects after
    control went back to JS (its C stack is scanned from there), hence the short sleeps."""
    for _ in range(2):
        await asyncio.sleep(0.05)
        gc.collect()
    return gc.mem_alloc() - BASE_FAKES


async def main():
    task = asyncio.create_task(node.run())
    await asyncio.sleep(5)
    print("wifi", await settled())
    print("wifi_sent", node.sent)
    print("wifi_modules", loaded())
    hal.wifi = False
    for p in hal.conns:
        p.close()
    await asyncio.sleep(25)  # the link notices, LoRaWAN takes over (duty cycle: ~1 uplink/6 s)
    print("lora", await settled())
    print("lora_sent", node.lora_sent)
    print("lora_modules", loaded())
    task.cancel()
    await asyncio.sleep(0)


await main()  # noqa: F704 (run.mjs runs the script with top-level await)
