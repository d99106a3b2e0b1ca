"""Simulated sensors: a BME280 speaking its register protocol, DS18B20 probes, a battery ADC.

Values follow a per-node weather model (daily cycle, slow drift, noise) so a simulated fleet looks
like a real one. Written in the MicroPython subset: the CPython host port (polylink_host.hal)
and the MicroPython Unix port (polylink_host.unixhal) run this same file. The BME280 turns the
model's values into raw ADC counts by inverting the datasheet's floating-point formulas, so the
firmware's integer driver does the real work.
"""

import math
import time
from binascii import crc32  # zlib.crc32's value; MicroPython has binascii but no zlib

BME280_ADDR = 0x76
_ENODEV = 19  # the errno MicroPython's I2C raises when no device acknowledges

# Trimming parameters: T and P from the datasheet's worked example; H from a typical part.
CALIB = {
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


class Rand:
    """A seeded random stream (xorshift32) in the MicroPython subset.

    MicroPython's random has one global generator and no gauss(); each simulated part needs its
    own reproducible stream, so both ports draw from this instead of random.Random.
    """

    def __init__(self, seed: int):
        self.s = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def _next(self) -> int:
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def random(self) -> float:
        return self._next() / 4294967296.0

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def randrange(self, a: int, b: int) -> int:
        return a + self._next() % (b - a)

    def gauss(self, mu: float, sigma: float) -> float:
        # Box-Muller; 1 - random() is in (0, 1], so the log is defined.
        u = 1.0 - self.random()
        return mu + sigma * math.sqrt(-2.0 * math.log(u)) * math.cos(2 * math.pi * self.random())


class Weather:
    """The outdoor conditions at one node: deterministic per node, varying with the time of day."""

    def __init__(self, seed: int):
        rnd = Rand(seed)
        self.rnd = Rand(seed ^ 0x5EED)
        self.mean_c = rnd.uniform(8.0, 16.0)
        self.swing_c = rnd.uniform(3.0, 7.0)  # half the day-night difference
        self.rh_mean = rnd.uniform(55.0, 75.0)
        self.p_mean = rnd.uniform(100300.0, 102300.0)
        self.phase_s = rnd.uniform(-3600.0, 3600.0)  # streets warm up at slightly different times

    def _day(self, t: float) -> float:
        # -1 at 03:00, +1 at 15:00 (UTC for simplicity)
        return math.sin(2 * math.pi * ((t + self.phase_s) % 86400 - 9 * 3600) / 86400)

    def temperature(self, t: float) -> float:
        return self.mean_c + self.swing_c * self._day(t) + self.rnd.gauss(0, 0.08)

    def humidity(self, t: float, temp_c: float) -> float:
        # Relative humidity falls as the air warms (roughly constant absolute humidity).
        rh = self.rh_mean - 3.0 * (temp_c - self.mean_c) + self.rnd.gauss(0, 0.6)
        return min(100.0, max(5.0, rh))

    def pressure(self, t: float) -> float:
        return (
            self.p_mean + 400.0 * math.sin(2 * math.pi * t / (5 * 86400)) + self.rnd.gauss(0, 3.0)
        )

    def ground(self, t: float) -> float:
        # A probe in soil or water: damped and late against the air.
        return self.mean_c + 0.4 * self.swing_c * self._day(t - 3 * 3600) + self.rnd.gauss(0, 0.03)


# ---- BME280 ---------------------------------------------------------------------------------


def _t_fine(c, adc_t: float) -> float:
    v1 = (adc_t / 16384.0 - c["T1"] / 1024.0) * c["T2"]
    v2 = (adc_t / 131072.0 - c["T1"] / 8192.0) ** 2 * c["T3"]
    return v1 + v2


def _pressure(c, adc_p: float, t_fine: float) -> float:
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * c["P6"] / 32768.0
    v2 = v2 + v1 * c["P5"] * 2.0
    v2 = v2 / 4.0 + c["P4"] * 65536.0
    v1 = (c["P3"] * v1 * v1 / 524288.0 + c["P2"] * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * c["P1"]
    p = 1048576.0 - adc_p
    p = (p - v2 / 4096.0) * 6250.0 / v1
    return p + (c["P9"] * p * p / 2147483648.0 + p * c["P8"] / 32768.0 + c["P7"]) / 16.0


def _humidity(c, adc_h: float, t_fine: float) -> float:
    h = t_fine - 76800.0
    h = (adc_h - (c["H4"] * 64.0 + c["H5"] / 16384.0 * h)) * (
        c["H2"] / 65536.0 * (1.0 + c["H6"] / 67108864.0 * h * (1.0 + c["H3"] / 67108864.0 * h))
    )
    return h * (1.0 - c["H1"] * h / 524288.0)


def _solve(f, target: float, lo: int, hi: int) -> int:
    """The integer x in lo..hi where the monotonic f(x) comes closest to target (bisection)."""
    rising = f(hi) > f(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi


def raw_counts(c, temp_c: float, press_pa: float, rh: float) -> tuple[int, int, int]:
    """(adc_T, adc_P, adc_H) a BME280 with trimming c reads at these conditions."""
    adc_t = _solve(lambda x: _t_fine(c, x) / 5120.0, temp_c, 0, (1 << 20) - 1)
    tf = _t_fine(c, adc_t)
    adc_p = _solve(lambda x: _pressure(c, x, tf), press_pa, 0, (1 << 20) - 2)
    adc_h = _solve(lambda x: _humidity(c, x, tf), rh, 0, (1 << 16) - 2)
    return adc_t, adc_p, adc_h


def calibration_bytes(c) -> tuple[bytes, bytes]:
    """The NVM images at 0x88..0xA1 and 0xE1..0xE7 holding trimming parameters c."""
    tp = bytearray(26)
    for i, k in enumerate(("T1", "T2", "T3", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9")):
        tp[2 * i : 2 * i + 2] = (c[k] & 0xFFFF).to_bytes(2, "little")
    tp[25] = c["H1"]
    h = bytearray(7)
    h[0:2] = (c["H2"] & 0xFFFF).to_bytes(2, "little")
    h[2] = c["H3"]
    h4, h5 = c["H4"] & 0xFFF, c["H5"] & 0xFFF
    h[3] = h4 >> 4
    h[4] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
    h[5] = h5 >> 4
    h[6] = c["H6"] & 0xFF
    return bytes(tp), bytes(h)


class SimBME280:
    """A BME280 register map: chip id, trimming NVM, ctrl_hum/ctrl_meas, forced conversions."""

    def __init__(self, weather: Weather, calib=CALIB):
        self.weather = weather
        self.calib = calib
        self.regs = bytearray(256)
        self.regs[0xD0] = 0x60
        tp, h = calibration_bytes(calib)
        self.regs[0x88 : 0x88 + 26] = tp
        self.regs[0xE1 : 0xE1 + 7] = h
        self._osrs_h = 0
        self.conversions = 0
        self.fail = False  # True: the device stops acknowledging, as when a wire comes loose
        self._latch_skipped()

    def _latch_skipped(self):
        # After power-on the data registers read as 'skipped' until a conversion ran.
        self.regs[0xF7:0xFF] = bytes((0x80, 0, 0, 0x80, 0, 0, 0x80, 0))

    def read(self, reg: int, n: int) -> bytes:
        return bytes(self.regs[reg : reg + n])

    def write(self, reg: int, data: bytes) -> None:
        for i, b in enumerate(data):
            r = reg + i
            if r == 0xE0 and b == 0xB6:
                self.regs[0xF2:0xF6] = bytes(4)
                self._osrs_h = 0
                self._latch_skipped()
            elif r == 0xF2:
                self.regs[r] = (
                    b & 0x07
                )  # takes effect with the next ctrl_meas write (datasheet 5.4.3)
            elif r == 0xF4:
                self.regs[r] = b
                self._osrs_h = self.regs[0xF2]
                if b & 0x03 in (1, 2):
                    self._convert(b >> 5, (b >> 2) & 0x07, self._osrs_h)
                    self.regs[r] = b & 0xFC  # forced mode returns to sleep after one conversion
            elif r in (0xF5,):
                self.regs[r] = b

    def _convert(self, osrs_t: int, osrs_p: int, osrs_h: int) -> None:
        now = time.time()
        w = self.weather
        t = w.temperature(now)
        adc_t, adc_p, adc_h = raw_counts(self.calib, t, w.pressure(now), w.humidity(now, t))
        if not osrs_t:
            adc_t = 0x80000
        if not osrs_p:
            adc_p = 0x80000
        if not osrs_h:
            adc_h = 0x8000
        r = self.regs
        r[0xF7], r[0xF8], r[0xF9] = adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4
        r[0xFA], r[0xFB], r[0xFC] = adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4
        r[0xFD], r[0xFE] = adc_h >> 8, adc_h & 0xFF
        self.conversions += 1


class SimI2C:
    """machine.I2C's memory-access methods over simulated devices keyed by 7-bit address."""

    def __init__(self, devices: dict):
        self.devices = devices

    def _dev(self, addr: int):
        dev = self.devices.get(addr)
        if dev is None or getattr(dev, "fail", False):
            raise OSError(_ENODEV, "ENODEV")
        return dev

    def scan(self) -> list[int]:
        return sorted(a for a, d in self.devices.items() if not getattr(d, "fail", False))

    def readfrom_mem(self, addr: int, memaddr: int, nbytes: int, *, addrsize: int = 8) -> bytes:
        return self._dev(addr).read(memaddr, nbytes)

    def readfrom_mem_into(self, addr: int, memaddr: int, buf, *, addrsize: int = 8) -> None:
        data = self._dev(addr).read(memaddr, len(buf))
        buf[: len(data)] = data

    def writeto_mem(self, addr: int, memaddr: int, buf, *, addrsize: int = 8) -> None:
        self._dev(addr).write(memaddr, bytes(buf))


# ---- DS18B20 --------------------------------------------------------------------------------


def dallas_crc8(data: bytes) -> int:
    """The 1-Wire CRC (x^8 + x^5 + x^4 + 1) that closes every ROM code and scratchpad."""
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


class SimDS18X20:
    """The ds18x20.DS18X20 interface over simulated DS18B20 probes (12-bit, 1/16 degC steps)."""

    def __init__(self, weather: Weather, serials: list[bytes]):
        self.weather = weather
        self.roms = []
        for s in serials:
            rom = bytes((0x28,)) + s[:6]
            self.roms.append(bytearray(rom + bytes((dallas_crc8(rom),))))
        self._latched: float | None = None
        self.fail = False  # True: reads fail their CRC, as on a noisy long cable

    def scan(self) -> list[bytearray]:
        return [bytearray(r) for r in self.roms]

    def convert_temp(self) -> None:
        self._latched = self.weather.ground(time.time())

    def read_temp(self, rom) -> float:
        if self.fail:
            raise Exception("CRC error")  # what ds18x20.read_scratch raises
        if bytes(rom) not in [bytes(r) for r in self.roms]:
            raise Exception("CRC error")  # no device answers: the bus reads all ones
        if self._latched is None:
            return 85.0  # power-on value of the scratchpad
        i = [bytes(r) for r in self.roms].index(bytes(rom))
        return round((self._latched + 0.05 * i) * 16) / 16


# ---- battery --------------------------------------------------------------------------------


class SimBattery:
    """A LiPo cell with a small solar panel, seen through an ADC divider."""

    def __init__(self, seed: int, divider: float):
        rnd = Rand(seed ^ 0xBA77)
        self.rnd = Rand(seed ^ 0xADC)
        self.divider = divider
        self.base_v = rnd.uniform(3.65, 3.95)

    def volts(self, t: float) -> float:
        sun = max(0.0, math.sin(2 * math.pi * ((t % 86400) - 6 * 3600) / 86400))
        return self.base_v + 0.2 * sun - 0.05

    def adc_uv(self) -> int:
        v = self.volts(time.time()) / self.divider
        return max(0, int(v * 1e6 + self.rnd.gauss(0, 8000)))  # ESP32 ADC noise, a few mV rms


class SimPMU:
    """An X-Powers AXP192 or AXP2101 power chip as its registers show the battery (T-Beam v1.x).

    Register map from the datasheets, as polylink/drivers/pmu.py reads it: chip id at 0x03; AXP192:
    battery present bit 5 of 0x01, ADC enable bit 7 of 0x82, voltage in 0x78/0x79 (12 bits,
    1.1 mV); AXP2101: battery present bit 3 of 0x00, ADC enable bit 0 of 0x30, voltage in
    0x34/0x35 (14 bits, mV). The voltage registers read 0 until their ADC channel is enabled.
    """

    def __init__(self, chip: str, battery: "SimBattery"):
        self.chip = chip
        self.battery = battery
        self.regs = bytearray(256)
        if chip == "axp192":
            self.regs[0x03], self.regs[0x01], self.regs[0x82] = 0x03, 0x20, 0x03
        else:
            self.regs[0x03], self.regs[0x00], self.regs[0x30] = 0x4A, 0x08, 0x02

    def _update(self) -> None:
        mv = self.battery.volts(time.time()) * 1000
        if self.chip == "axp192":
            raw = int(mv / 1.1) if self.regs[0x82] & 0x80 else 0
            self.regs[0x78], self.regs[0x79] = raw >> 4, raw & 0x0F
        else:
            raw = int(mv) if self.regs[0x30] & 0x01 else 0
            self.regs[0x34], self.regs[0x35] = raw >> 8, raw & 0xFF

    def read(self, reg: int, n: int) -> bytes:
        self._update()
        return bytes(self.regs[reg : reg + n])

    def write(self, reg: int, data: bytes) -> None:
        self.regs[reg : reg + len(data)] = data


class SimHardware:
    """Everything attached to one simulated node, derived deterministically from its id.

    The battery sits where the board file says: behind an ADC divider (its pin and ratio), or
    behind a power chip on the I2C bus (one of the chips the board may carry, chosen per node).
    """

    def __init__(self, node: str, battery_pin: int = 35, divider: float = 2.0,
                 board: dict | None = None):
        seed = crc32(node.encode())
        self.uid = "%012x" % (seed * 2654435761 % (1 << 48))
        self.weather = Weather(seed)
        self.bme = SimBME280(self.weather)
        self.i2c = SimI2C({BME280_ADDR: self.bme})
        self.ds = SimDS18X20(self.weather, [seed.to_bytes(4, "little") + b"\x00\x01"])
        bat = (board or {}).get("battery") or {}
        if "adc_pin" in bat:
            battery_pin, divider = bat["adc_pin"], bat["divider"]
        self.battery_pin = battery_pin
        self.battery = SimBattery(seed, divider)
        self.pmu = None
        if "pmu" in bat:
            chips = bat["pmu"]
            self.pmu = SimPMU(chips[seed % len(chips)], self.battery)
            self.i2c.devices[bat.get("i2c_addr", 0x34)] = self.pmu
        self._rssi = -45 - seed % 40
        self._rnd = Rand(seed)

    def floating_uv(self) -> int:
        return self._rnd.randrange(0, 20000)  # a floating input reads near zero

    def adc_uv(self, pin: int) -> int:
        if pin != self.battery_pin:
            return self.floating_uv()
        return self.battery.adc_uv()

    def rssi(self) -> int:
        return self._rssi + self._rnd.randrange(-3, 4)


class SimBoardIO:
    """The HAL calls that reach the simulated sensors and pins, as the board file wires them;
    shared by the CPython host port (hal.HostHAL) and the Unix port (unixhal.UnixHAL)."""

    hw: SimHardware
    board: dict
    pins: dict  # GPIO -> level driven by pin_out

    def unique_id(self) -> str:
        return self.hw.uid

    def i2c(self):
        return self.hw.i2c if self.board.get("i2c") else None

    def ds18x20(self):
        return self.hw.ds if self.board.get("onewire_pin") is not None else None

    def adc_uv(self, pin: int) -> int:
        bat = self.board.get("battery") or {}
        enable = bat.get("enable_pin")
        if enable is not None and self.pins.get(enable) != bat.get("enable_level", 1):
            return self.hw.floating_uv()  # the divider is switched off: nothing on the pin
        return self.hw.adc_uv(pin)

    def pin_out(self, pin: int, value: int) -> None:
        self.pins[pin] = value
