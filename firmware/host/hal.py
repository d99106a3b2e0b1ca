"""The host HAL: polylink.hal.esp32's methods over simulated hardware and the host's network."""

import asyncio
import os
import re
import ssl
from pathlib import Path

# Reset causes: the numbers machine.reset_cause() reports on the chip (polylink/codes.py)
from polylink.codes import (  # noqa: F401 - the simulator's callers import them from here
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
)
from polylink_host import esp32sim, simclock
from polylink_host.simsensors import SimBoardIO, SimHardware

SIM_HEAP_FREE = (
    110_000  # what a DevKitC running the app typically reports; no real heap exists here
)


class SimReset(Exception):
    """The firmware called reset(); the simulator restarts the node as the chip would."""


class SimDeepSleep(SimReset):
    """The firmware called deepsleep(ms); the simulator powers the node down and wakes it."""

    def __init__(self, ms: int):
        super().__init__(f"machine.deepsleep({ms})")
        self.ms = ms


class HostHAL(SimBoardIO):
    """Hardware of one simulated node: flash is a directory, WiFi a switch, sensors simulated."""

    def __init__(self, node: str, root: Path | str, board: dict, hw: SimHardware | None = None):
        self.node = node
        self.root = str(root)
        self.board = board
        self.hw = hw if hw is not None else SimHardware(node, board=board)
        self.pins: dict[int, int] = {}  # GPIO -> level driven by pin_out
        self.cause = PWRON_RESET
        self.wifi_enabled = True  # the access point is in reach
        self._station = False  # connect() was called: like the ESP32 driver, keep (re)joining
        self._writers: set[asyncio.StreamWriter] = set()
        self.led_on = False
        self.micropython = (1, 24, 1)
        self.led_toggles = 0
        self.modem = None  # set by the simulation to a simradio.SimModem
        self.wdt_timeout_ms: int | None = None
        self.last_feed = self.ticks_ms()
        self._flash: esp32sim.Flash | None = None  # created on first use (OTA of the runtime)
        self._banners: dict = {}
        self.sleeps = 0  # deep sleeps since the simulation started (tests count wake cycles)
        self.slept_ms = 0
        self.asleep = False  # powered down in deep sleep: no socket, no radio
        Path(self.root).mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> str:
        return self.root + "/" + name

    # time
    # time: the clock both host ports share (simclock.py)
    def ticks_ms(self) -> int:
        return simclock.ticks_ms()

    def ticks_diff(self, a: int, b: int) -> int:
        return simclock.ticks_diff(a, b)

    def ticks_add(self, a: int, delta: int) -> int:
        return simclock.ticks_add(a, delta)

    def time(self) -> int | None:
        return simclock.unix_time()

    # memory and resets
    def mem_free(self) -> int:
        return SIM_HEAP_FREE

    def mem_alloc(self) -> int:
        return 0

    def collect(self) -> None:
        pass

    def reset_cause(self) -> int:
        return self.cause

    def reset(self) -> None:
        self.cause = SOFT_RESET
        raise SimReset("machine.reset()")

    def deepsleep(self, ms: int) -> None:
        """Like machine.deepsleep(ms): the simulator (sim.SimNode) keeps the node powered down
        for ms and boots it again with reset cause DEEPSLEEP_RESET; RAM is lost, flash kept."""
        self.cause = DEEPSLEEP_RESET
        self.sleeps += 1
        self.slept_ms += ms
        raise SimDeepSleep(ms)

    def mpy_version(self) -> tuple:
        """The MicroPython version a simulated node reports: the banner of the runtime image in
        the running app partition if an OTA update wrote one, else a setting (CPython runs it)."""
        fl = self._flash
        if fl is not None and fl.running:
            v = self._banner_version(fl.path(fl.running))
            if v is not None:
                return v
        return self.micropython

    def _banner_version(self, path: str) -> tuple | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._banners:
            m = re.search(rb"MicroPython v(\d+)\.(\d+)\.(\d+)", Path(path).read_bytes())
            self._banners = {key: tuple(int(x) for x in m.groups()) if m else None}
        return self._banners[key]

    # flash partitions: a simulation of esp32.Partition and the bootloader (esp32sim.py)
    def partition(self):
        return esp32sim.partition_class(self.flash())

    def flash(self) -> esp32sim.Flash:
        if self._flash is None:
            self._flash = esp32sim.Flash(self.root, self.board)
            self._flash.bootloader()  # the power-on
        return self._flash

    def bootloader(self) -> None:
        """What the chip's bootloader does at a reset (rolls back an unconfirmed runtime)."""
        if self._flash is None:
            self.flash()
        else:
            self._flash.bootloader()

    def wdt_start(self, timeout_ms: int) -> None:
        self.wdt_timeout_ms = timeout_ms
        self.last_feed = self.ticks_ms()

    def wdt_feed(self) -> None:
        self.last_feed = self.ticks_ms()

    def wdt_expired(self) -> bool:
        """True when a started watchdog went unfed past its timeout (loop starved or hung)."""
        t = self.wdt_timeout_ms
        return t is not None and self.ticks_diff(self.ticks_ms(), self.last_feed) > t

    def led(self, on: bool) -> None:
        if bool(on) != self.led_on:
            self.led_toggles += 1
        self.led_on = bool(on)

    # sensors: i2c, ds18x20, adc_uv, pin_out come from SimBoardIO

    # LoRa: a simulated modem (polylink_host.simradio.SimModem) if the simulation attached one
    def lora_modem(self):
        return self.modem if self.board.get("radio") else None

    # WiFi and network
    def wifi_connect(self, ssid: str, password: str) -> None:
        self._station = True

    def wifi_isconnected(self) -> bool:
        return self._station and self.wifi_enabled

    def wifi_disconnect(self) -> None:
        self._station = False

    def wifi_rssi(self) -> int | None:
        return self.hw.rssi() if self.wifi_isconnected() else None

    def set_wifi(self, up: bool) -> None:
        """Simulate the access point going away (up=False) or back; open sockets die with it."""
        self.wifi_enabled = up
        if not up:
            self.drop_connections()

    def drop_connections(self) -> None:
        """Abort every socket of this node without a goodbye, as a power cut or radio loss would."""
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def open_connection(self, host: str, port: int, tls=None):
        if not self.wifi_isconnected():
            raise OSError("WiFi is down")
        ctx = None
        if tls is not None:
            ctx = ssl.create_default_context(cafile=self.path(tls["ca"]) if tls.get("ca") else None)
            if not tls.get("ca"):
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        r, w = await asyncio.open_connection(host, port, ssl=ctx)
        self._writers = {x for x in self._writers if not x.transport.is_closing()}
        self._writers.add(w)
        return r, w
