"""Fakes for firmware tests (CPython and MicroPython): HAL, in-memory stream, BME280 bus."""

import json
import os

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_n = [0]


def boards_dir():
    """boards/ in the repository (CPython) or in the wasm filesystem (/boards)."""
    for d in (_HERE + "/../../boards", "/boards"):
        try:
            os.stat(d + "/ESP32_GENERIC.json")
            return d
        except OSError:
            pass
    raise OSError("boards/ESP32_GENERIC.json not found")


def vectors(name):
    """tests/vectors/NAME parsed, from the repository (CPython) or the wasm filesystem."""
    for p in (_HERE + "/../vectors/" + name, "/tests/vectors/" + name):
        try:
            with open(p) as f:
                return json.load(f)
        except OSError:
            pass
    raise OSError(name + " not found")


def tmpdir(tag="t"):
    """A fresh empty directory (no tempfile module on MicroPython)."""
    base = "/tmp"
    try:
        os.stat(base)
    except OSError:
        os.mkdir(base)
    while True:
        _n[0] += 1
        path = "%s/plfw-%s-%d-%d" % (base, tag, os.getpid() if hasattr(os, "getpid") else 0, _n[0])
        try:
            os.stat(path)
        except OSError:
            os.mkdir(path)
            return path


def rmtree(path):
    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


class FakeStream:
    """Reader and writer in one, like MicroPython's asyncio Stream: reads rx, collects tx."""

    def __init__(self, rx=b""):
        self.rx = bytearray(rx)
        self.tx = bytearray()
        self.closed = False

    def feed(self, data):
        self.rx += data

    async def readexactly(self, n):
        if len(self.rx) < n:
            raise EOFError("fake stream: wanted %d bytes, %d left" % (n, len(self.rx)))
        b = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return b

    def write(self, b):
        self.tx += bytes(b)

    async def drain(self):
        pass

    def close(self):
        pass  # as MicroPython's StreamWriter.close(): only wait_closed() closes the socket

    async def wait_closed(self):
        self.closed = True

    def take(self):
        t = bytes(self.tx)
        self.tx = bytearray()
        return t


class FakeHAL:
    """Enough of the HAL for unit tests: a manual clock, a flash directory, fake sensors."""

    def __init__(self, root, board, i2c=None, ds=None, adc=None):
        self.root = root
        self.board = board
        self._i2c = i2c
        self._ds = ds
        self.adc = adc or {}
        self.gates = {}  # adc pin -> (enable pin, level): reads 0 V unless that pin is at level
        self.pins = {}  # GPIO -> last level driven by pin_out
        self.pin_log = []
        self.now = 1000
        self.leds = []
        self.fed = 0
        self.resets = 0
        self.cause = 1

    def path(self, name):
        return self.root + "/" + name

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, d):
        return a + d

    def time(self):
        return 1767225600

    def mem_free(self):
        return 54321

    def reset_cause(self):
        return self.cause

    def reset(self):
        self.resets += 1

    def wdt_start(self, ms):
        pass

    def wdt_feed(self):
        self.fed += 1

    def led(self, on):
        self.leds.append(on)

    def i2c(self):
        return self._i2c

    def ds18x20(self):
        return self._ds

    def adc_uv(self, pin):
        gate = self.gates.get(pin)
        if gate is not None and self.pins.get(gate[0]) != gate[1]:
            return 0
        return self.adc[pin]

    def pin_out(self, pin, value):
        self.pins[pin] = value
        self.pin_log.append((pin, value))

    def wifi_rssi(self):
        return -61

    def mpy_version(self):
        return (1, 24, 1)

    def partition(self):
        """esp32.Partition: the simulation (polylink_host.esp32sim) a test attached, if any."""
        if getattr(self, "flash", None) is None:
            raise OSError("no esp32 module in this test")
        from polylink_host.esp32sim import partition_class

        return partition_class(self.flash)

    async def open_connection(self, host, port, tls=None):
        if getattr(self, "http", None) is None:
            raise OSError("no network in this test")
        c = self.http.connect()
        return c, c


# The BMP280/BME280 datasheet's worked example (T, P) and a typical part's humidity trimming.
CAL = {
    "T1": 27504,
    "T2": 26435,
    "T3": -1000,
    "P1": 36477,
    "P2": -10685,
    "P3": 3024,
    "P4": 2855,
    "P5": 140,
    "P6": -7,
    "P7": 15500,
    "P8": -14600,
    "P9": 6000,
    "H1": 75,
    "H2": 362,
    "H3": 0,
    "H4": 313,
    "H5": 50,
    "H6": 30,
}


def _le(v):
    v &= 0xFFFF
    return bytes((v & 0xFF, v >> 8))


class FakeBME280Bus:
    """An I2C bus with one BME280 register map at addr that returns fixed raw counts."""

    def __init__(self, adc_t=519888, adc_p=415148, adc_h=30000, addr=0x76, chip=0x60):
        self.addr = addr
        self.regs = bytearray(256)
        self.regs[0xD0] = chip
        tp = b""
        for k in ("T1", "T2", "T3", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9"):
            tp += _le(CAL[k])
        self.regs[0x88 : 0x88 + 24] = tp
        self.regs[0xA1] = CAL["H1"]
        h4, h5 = CAL["H4"], CAL["H5"]
        self.regs[0xE1:0xE8] = _le(CAL["H2"]) + bytes(
            (CAL["H3"], h4 >> 4, (h4 & 0xF) | ((h5 & 0xF) << 4), h5 >> 4, CAL["H6"])
        )
        self.set_raw(adc_t, adc_p, adc_h)
        self.writes = []
        self.missing = False

    def set_raw(self, t, p, h):
        r = self.regs
        r[0xF7] = p >> 12
        r[0xF8] = (p >> 4) & 0xFF
        r[0xF9] = (p & 0xF) << 4
        r[0xFA] = t >> 12
        r[0xFB] = (t >> 4) & 0xFF
        r[0xFC] = (t & 0xF) << 4
        r[0xFD] = h >> 8
        r[0xFE] = h & 0xFF

    def _check(self, addr):
        if self.missing or addr != self.addr:
            raise OSError(19)

    def readfrom_mem(self, addr, reg, n):
        self._check(addr)
        return bytes(self.regs[reg : reg + n])

    def readfrom_mem_into(self, addr, reg, buf):
        self._check(addr)
        for i in range(len(buf)):
            buf[i] = self.regs[reg + i]

    def writeto_mem(self, addr, reg, buf):
        self._check(addr)
        self.writes.append((reg, bytes(buf)))


class FakeDS:
    """ds18x20.DS18X20's interface with fixed readings per ROM (an Exception models a CRC error)."""

    def __init__(self, temps):
        self.temps = temps  # list of float or Exception
        self.converted = 0

    def scan(self):
        return [bytearray((0x28, i, 0, 0, 0, 0, 0, 0)) for i in range(len(self.temps))] + [
            bytearray((0x10, 9, 0, 0, 0, 0, 0, 0))
        ]  # a DS18S20 (family 0x10) on the same bus

    def convert_temp(self):
        self.converted += 1

    def read_temp(self, rom):
        t = self.temps[rom[1]]
        if isinstance(t, Exception):
            raise t
        return t


def board():
    return {
        "name": "T",
        "chip": "esp32",
        "micropython_build": "ESP32_GENERIC",
        "flash_size": 4194304,
        "partitions": [],
        "led_pin": 2,
        "i2c": {"sda": 21, "scl": 22},
        "onewire_pin": 4,
        "battery": {"adc_pin": 35, "divider": 2.0},
        "sensors": ["bme280", "ds18b20", "battery"],
    }


class Pipe(FakeStream):
    """A FakeStream whose reads wait for data like a socket (EOFError once closed)."""

    def __init__(self):
        super().__init__()
        import asyncio

        self._ev = asyncio.Event()

    def feed(self, data):
        self.rx += data
        self._ev.set()

    async def readexactly(self, n):
        while len(self.rx) < n:
            if self.closed:
                raise EOFError("pipe closed")
            self._ev.clear()
            await self._ev.wait()
        b = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return b

    def cut(self):
        """The peer closes the connection: reads end with EOFError."""
        self.closed = True
        self._ev.set()

    async def wait_closed(self):
        self.cut()


class NetHAL(FakeHAL):
    """FakeHAL with a real clock, WiFi that is up, and connections that are Pipes the test reads."""

    def __init__(self, root, board):
        super().__init__(root, board)
        import time

        self._t = time
        self.pipes = []

    def ticks_ms(self):
        return self._t.ticks_ms() if hasattr(self._t, "ticks_ms") else int(self._t.time() * 1000)

    def wifi_connect(self, ssid, pw):
        pass

    def wifi_isconnected(self):
        return True

    async def open_connection(self, host, port, tls=None):
        p = Pipe()
        self.pipes.append(p)
        return p, p


class FakeHTTP:
    """An HTTP/1.1 server in memory for the OTA agent: GET with Range, optional faults.

    files: {path: bytes}. cut: {path: n} closes the connection after n body bytes once.
    corrupt: {path} serves those bodies with one byte flipped.
    """

    def __init__(self, files):
        self.files = files
        self.cut = {}
        self.corrupt = set()
        self.requests = []  # (path, range start)
        self.bytes_sent = 0

    def connect(self):
        return _HTTPConn(self)

    def answer(self, request):
        lines = request.decode().split("\r\n")
        path = lines[0].split(" ")[1]
        start = 0
        for ln in lines[1:]:
            if ln.lower().startswith("range: bytes="):
                start = int(ln[13:].split("-")[0])
        self.requests.append((path, start))
        body = self.files.get(path)
        if body is None:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        if path in self.corrupt:
            body = bytes([body[0] ^ 1]) + body[1:]
        if start >= len(body) and start:
            return b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n"
        part = body[start:]
        n = self.cut.pop(path, None)
        head = "HTTP/1.1 %s\r\nContent-Length: %d\r\n" % (
            "206 Partial Content" if start else "200 OK", len(part))
        if start:
            head += "Content-Range: bytes %d-%d/%d\r\n" % (start, len(body) - 1, len(body))
        if n is not None:
            part = part[:n]
        self.bytes_sent += len(part)
        return (head + "\r\n").encode() + part


class _HTTPConn:
    def __init__(self, server):
        self.server = server
        self.req = bytearray()
        self.rx = None
        self.pos = 0

    def write(self, b):
        self.req += bytes(b)

    async def drain(self):
        pass

    def close(self):
        pass

    async def wait_closed(self):
        pass

    def _ready(self):
        if self.rx is None:
            self.rx = self.server.answer(bytes(self.req))

    async def readline(self):
        self._ready()
        rx = self.rx
        i = rx.find(b"\n", self.pos)
        end = len(rx) if i < 0 else i + 1
        line = rx[self.pos:end]
        self.pos = end
        return line

    async def read(self, n):
        self._ready()
        b = self.rx[self.pos:self.pos + n]
        self.pos += len(b)
        return b
