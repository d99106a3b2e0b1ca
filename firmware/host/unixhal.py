"""The HAL for the MicroPython Unix port: polylink.hal.esp32's methods, run by real MicroPython.

One simulated node is one `micropython -X heapsize=N` process (polylink_host.unixsim supervises
them). What is real here: the interpreter, its heap limit and garbage collector, asyncio, TCP
sockets to the real broker, files in the node's flash directory. What is simulated, with the same
code the CPython host port runs (MicroPython subset): the sensors (simsensors.py), the clock
(simclock.py) and the flash partitions of a runtime update (esp32sim.py). No WiFi exists: the
station is "joined" as soon as the firmware asks; an outage is the broker or the network going.

Resets and deep sleep end the process: the HAL tells the supervisor why on its control line
(stdout lines starting with CTRL) and the supervisor starts the node again with that reset cause,
as the chip's ROM reports it after a reset. The watchdog is the supervisor's too: wdt_feed() sends
a line, and a node whose feeds stop for longer than the timeout is killed and restarted with
WDT_RESET, exactly as a hung loop on the chip would be.
"""

import gc
import sys

from polylink_host import simclock
from polylink_host.simsensors import SimBoardIO, SimHardware

# codes.PWRON_RESET and SOFT_RESET, kept here, not imported: this module shares the node's bounded
# heap, and codes.py costs ~1 KB of names (tests/test_codes.py holds them to it)
PWRON_RESET = 1
SOFT_RESET = 5

CTRL = "@polylink "  # prefix of a control line to the supervisor (unixsim.py reads them)
# Exit statuses the supervisor reads as "the firmware asked for this", not as a crash.
EXIT_RESET = 3
EXIT_DEEPSLEEP = 4


def control(*words) -> None:
    """One line to the supervisor: 'wdt 30000', 'feed', 'reset 3', 'sleep 60000'."""
    sys.stdout.write(CTRL + " ".join([str(w) for w in words]) + "\n")


class UnixHAL(SimBoardIO):
    """Hardware of one node on the Unix port: flash is a directory, sensors simulated."""

    def __init__(self, node: str, root: str, board: dict, cause: int = PWRON_RESET):
        self.node = node
        self.root = root
        self.board = board
        self.hw = SimHardware(node, board=board)
        self.pins = {}
        self.cause = cause
        self._station = False
        self._flash = None
        self._contexts = {}  # CA file (or None): its SSLContext (_tls_context)
        self.led_on = False
        self.fail_connects = 0  # injected faults (unixnode.py): connects to fail with MemoryError

    def path(self, name: str) -> str:
        return self.root + "/" + name

    # time: the clock the CPython host port shares (simclock.py); wall time an int
    def ticks_ms(self) -> int:
        return simclock.ticks_ms()

    def ticks_diff(self, a: int, b: int) -> int:
        return simclock.ticks_diff(a, b)

    def ticks_add(self, a: int, delta: int) -> int:
        return simclock.ticks_add(a, delta)

    def time(self):
        return simclock.unix_time()

    # memory and resets: the real heap of this interpreter (-X heapsize)
    def mem_free(self) -> int:
        return gc.mem_free()

    def mem_alloc(self) -> int:
        return gc.mem_alloc()

    def collect(self) -> None:
        gc.collect()

    def reset_cause(self) -> int:
        return self.cause

    def reset(self) -> None:
        control("reset", SOFT_RESET)
        sys.exit(EXIT_RESET)

    def deepsleep(self, ms: int) -> None:
        control("sleep", int(ms))
        sys.exit(EXIT_DEEPSLEEP)

    def mpy_version(self) -> tuple:
        return tuple(sys.implementation.version[:3])

    # flash partitions of a runtime update: the simulation the CPython port uses (esp32sim.py)
    def flash(self):
        if self._flash is None:
            # Imported here: the simulation costs ~15 KB of heap that only a runtime update needs
            from polylink_host import esp32sim

            self._flash = esp32sim.Flash(self.root, self.board)
            self._flash.bootloader()  # the power-on
        return self._flash

    def partition(self):
        from polylink_host import esp32sim

        return esp32sim.partition_class(self.flash())

    def wdt_start(self, timeout_ms: int) -> None:
        control("wdt", int(timeout_ms))

    def wdt_feed(self) -> None:
        control("feed")

    def led(self, on: bool) -> None:
        self.led_on = bool(on)

    # sensors: i2c, ds18x20, adc_uv, pin_out come from SimBoardIO

    def lora_modem(self):
        return None  # no radio on the Unix port; LoRaWAN nodes run on the CPython port

    # WiFi: the host's network is always in reach
    def wifi_connect(self, ssid: str, password: str) -> None:
        self._station = True

    def wifi_isconnected(self) -> bool:
        return self._station

    def wifi_disconnect(self) -> None:
        self._station = False

    def wifi_rssi(self):
        return self.hw.rssi() if self._station else None

    def _tls_context(self, ca):
        """One SSLContext per CA file for the life of the process, made at the first TLS
        connection (the MQTT link's, at boot, on an unfragmented heap) and used again by every
        later one, the OTA's HTTPS downloads included. A context made per connection needs a
        3 KB block (the context with its mbedTLS state) on a heap that hours of sampling and
        downlinks have cut into pieces: an HTTPS update failed at 204-212 KB with MemoryError
        allocating 3048 bytes in SSLContext() while 47 KB were free, the largest piece 1.2 KB
        (micropython.mem_info; docs/benchmarks.md). It also parses the CA once, not per file."""
        ctx = self._contexts.get(ca)
        if ctx is None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if ca:
                from polylink.net import pem

                pem.trust(ctx, self.path(ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.verify_mode = ssl.CERT_NONE
            self._contexts[ca] = ctx
        return ctx

    async def open_connection(self, host: str, port: int, tls=None):
        """TCP, or TLS with MicroPython's own `ssl` (mbedTLS, as on the ESP32), as the ESP32
        HAL opens it: the CA from flash as cadata, CERT_REQUIRED, the host as server name."""
        import asyncio

        if self.fail_connects:
            self.fail_connects -= 1
            raise MemoryError("memory allocation failed (injected)")
        ctx = None
        if tls is not None:
            # The connection's objects from a collected heap, not among the last download's
            # garbage (before the kept context: at 212 KB 1 of 5 runs passed without it, 4 of
            # 4 with it).
            gc.collect()
            ctx = self._tls_context(tls.get("ca"))
        return await asyncio.open_connection(host, port, ssl=ctx)
