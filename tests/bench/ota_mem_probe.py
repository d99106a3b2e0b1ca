# Runs under MicroPython (tests/mpy/run.mjs script mode, top-level await allowed); started by
# bench_ota.py. Prints one line "key value" per figure (bytes or ms).
# What the running app already holds (the codec, asyncio, json, ...) is not the update's cost.
import asyncio  # noqa: E402,F401
import binascii  # noqa: E402,F401
import gc
import hashlib  # noqa: E402,F401
import json
import time

from polylink import config, proto, store  # noqa: E402,F401
from polylink.ota import slots  # noqa: E402,F401
from polylink_host import esp32sim  # noqa: E402 - the simulated flash: not the node's heap

await asyncio.sleep(0)  # noqa: F704 - the wasm port collects garbage when control passes JS
BASE = gc.mem_alloc()
from polylink.net import http as httpget  # noqa: E402,F401
from polylink.ota import agent as ota  # noqa: E402,F401

await asyncio.sleep(0)  # noqa: F704
print("modules", gc.mem_alloc() - BASE)
BASE = gc.mem_alloc()
from polylink.ota import ecdsa  # noqa: E402

await asyncio.sleep(0)  # noqa: F704
print("ecdsa_module", gc.mem_alloc() - BASE)


with open("/tests/vectors/ota_v1.json") as f:
    REL = json.load(f)["release"]
DIGEST = hashlib.sha256(REL["manifest"].encode()).digest()
PUB = ecdsa.public_key(binascii.unhexlify(REL["keys"]["k1"]))
SIG = binascii.unhexlify(REL["sig"].split()[1])
del REL

peak = [0]


async def sample():
    # The wasm port collects when control passes through JS: after that, the live heap.
    gc.collect()
    await asyncio.sleep(0)
    a = gc.mem_alloc()
    if a > peak[0]:
        peak[0] = a
    if len(first) < 2:
        first.append(a)  # preallocated below: no heap growth from the sampling itself


first = []


# Time: median of 5 verifications.
times = []
for _ in range(5):
    t0 = time.ticks_ms()
    ecdsa.verify_digest(PUB, DIGEST, SIG)
    times.append(time.ticks_diff(time.ticks_ms(), t0))
times.sort()
print("verify_ms", times[2])

# Heap: the wasm port cannot collect inside synchronous code, so what one verification
# allocates in all (short-lived big ints, garbage at once) is measured, and what stays after.
await asyncio.sleep(0)  # noqa: F704
base = gc.mem_alloc()
ecdsa.verify_digest(PUB, DIGEST, SIG)
print("verify_alloc", gc.mem_alloc() - base)
await asyncio.sleep(0)  # noqa: F704
print("verify_kept", gc.mem_alloc() - base)

# Streaming a 100 KB file through the agent's fetch: HTTP parsing, Range-capable writes to flash,
# SHA-256 of the result. The server side generates the body on the fly (it is not the node's heap).
SIZE = 100 * 1024
PATTERN = bytes(range(256))


def body_chunk(pos, n):
    out = bytearray(n)
    for i in range(n):
        out[i] = (pos + i) & 0xFF
    return out


h = hashlib.sha256()
for pos in range(0, SIZE, 1024):
    h.update(body_chunk(pos, min(1024, SIZE - pos)))
SHA = binascii.hexlify(h.digest()).decode()
del h


class Conn:
    def __init__(self, size=SIZE):
        self.size = size
        self.head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
        self.hpos = 0
        self.pos = 0
        self.reads = 0

    def write(self, b):
        pass

    async def drain(self):
        pass

    def close(self):
        pass

    async def readline(self):
        i = self.head.find(b"\n", self.hpos) + 1
        line = self.head[self.hpos:i]
        self.hpos = i
        return line

    async def read(self, n):
        n = min(n, self.size - self.pos)
        b = bytes(body_chunk(self.pos, n))
        self.pos += n
        self.reads += 1
        CONNS[-1] = self
        await sample()
        return b


CONNS = [None]


class HAL:
    root = "/tmp/otaprobe"
    conn_size = SIZE
    flash = None

    async def open_connection(self, host, port, tls=None):
        c = Conn(self.conn_size)
        return c, c

    def path(self, name):
        return self.root + "/" + name

    def partition(self):
        return esp32sim.partition_class(self.flash)

    def mpy_version(self):
        return (1, 24, 1)


class Cfg:
    node = "probe"
    mqtt_user = None
    board = {"name": "ESP32_GENERIC"}
    ota = {"keys": {}, "url": "http://fleet", "ca": None}


class Node:
    hal = HAL()
    cfg = Cfg()
    fw = "0.1.0"

    def emit(self, mtype, body, ts=None):
        pass


import os  # noqa: E402

for d in ("/tmp", "/tmp/otaprobe"):
    try:
        os.mkdir(d)
    except OSError:
        pass
# The wasm port keeps ~30 bytes per pass through JS (its promise bookkeeping, not ours): measure
# that for as many passes as the stream makes, and take it off the stream's peak.
gc.collect()
await asyncio.sleep(0)  # noqa: F704
a0 = gc.mem_alloc()
for _ in range(SIZE // 1024):
    gc.collect()
    await asyncio.sleep(0)  # noqa: F704
gc.collect()
await asyncio.sleep(0)  # noqa: F704
ARTIFACT = gc.mem_alloc() - a0
print("js_artifact", ARTIFACT)
await asyncio.sleep(0)  # noqa: F704
before_agent = gc.mem_alloc()
agent = ota.Agent(Node())
await asyncio.sleep(0)  # noqa: F704
print("agent", gc.mem_alloc() - before_agent)
base = gc.mem_alloc()
peak[0] = base
t0 = time.ticks_ms()
await agent.fetch("http://fleet", "/ota/v1/files/" + SHA, "/tmp/otaprobe/f.mpy", SIZE, SHA,  # noqa: F704
                  "/tmp/otaprobe/f.part")
print("stream_ms", time.ticks_diff(time.ticks_ms(), t0))
print("stream_peak", peak[0] - base - ARTIFACT)
print("stream_size", os.stat("/tmp/otaprobe/f.mpy")[6])

# A MicroPython runtime image streamed into the next app partition (esp32.Partition: here the
# simulation, whose own buffers are transient), 4 KB blocks, then read back and hashed.
RT_SIZE = 200 * 1024
h = hashlib.sha256()
for pos in range(0, RT_SIZE, 1024):
    h.update(body_chunk(pos, 1024))
RT_SHA = binascii.hexlify(h.digest()).decode()
del h
with open("/boards/ESP32_GENERIC_OTA.json") as f:
    board = json.load(f)
fl = esp32sim.Flash("/tmp/otaprobe", board)
fl.bootloader()
Node.hal.flash = fl
Node.hal.conn_size = RT_SIZE
del board
for _ in range(3):
    gc.collect()
    await asyncio.sleep(0)  # noqa: F704
base = gc.mem_alloc()
from polylink.ota import runtime  # noqa: E402

for _ in range(3):
    gc.collect()
    await asyncio.sleep(0)  # noqa: F704
print("runtime_module", gc.mem_alloc() - base)
RT_PASSES = RT_SIZE // 1024  # the stream reads 1 KB pieces: one pass through JS each
gc.collect()
await asyncio.sleep(0)  # noqa: F704
a0 = gc.mem_alloc()
for _ in range(RT_PASSES):
    gc.collect()
    await asyncio.sleep(0)  # noqa: F704
gc.collect()
await asyncio.sleep(0)  # noqa: F704
RT_ARTIFACT = gc.mem_alloc() - a0
print("rt_js_artifact", RT_ARTIFACT)
gc.collect()
await asyncio.sleep(0)  # noqa: F704
base = gc.mem_alloc()
peak[0] = base
first[:] = []
part = await runtime.fetch(agent, "http://fleet", {"sha256": RT_SHA, "size": RT_SIZE},  # noqa: F704
                           lambda n: None)
if CONNS[-1].reads != RT_PASSES:
    raise RuntimeError("the stream made %d passes, not %d" % (CONNS[-1].reads, RT_PASSES))
print("rt_stream_peak", peak[0] - base - RT_ARTIFACT)
print("rt_stream_first", first[1] - base)  # after the first 1 KB piece: buffers all in place
print("rt_size", RT_SIZE if runtime.readback_sha(part, RT_SIZE, bytearray(4096)) == RT_SHA else 0)
