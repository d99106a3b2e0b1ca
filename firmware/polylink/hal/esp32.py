"""The ESP32 HAL: the only firmware module that touches machine, network and sensor drivers."""

import asyncio
import gc
import sys
import time

import machine
import network

# Some ports count time.time() from 2000, others from 1970; computed once so frames carry Unix time.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
_VALID_AFTER = 1700000000  # a clock before Nov 2023 was never set (no NTP yet)


def reset() -> None:
    """Reset the chip; needs no board (main.py's last resort when no HAL could be built)."""
    machine.reset()


class HALError(OSError):
    """The board definition asks for hardware this HAL cannot drive."""


class HAL:
    """Hardware access for one ESP32 board, configured by its board definition (boards/*.json)."""

    def __init__(self, board: dict, root: str = ""):
        self.board = board
        self.root = root
        self._wdt = None
        self._wlan = None
        self._contexts = {}  # CA file (or None): its SSLContext (_tls_context)
        self._i2c = None
        self._led = None
        self._led_off = 1 if board.get("led_active_low") else 0
        pin = board.get("led_pin")
        if pin is not None:
            self._led = machine.Pin(pin, machine.Pin.OUT, value=self._led_off)

    def path(self, name: str) -> str:
        """Absolute flash path of a file the firmware keeps."""
        return self.root + "/" + name

    # time
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b) -> int:
        return time.ticks_diff(a, b)

    def ticks_add(self, a, delta):
        return time.ticks_add(a, delta)

    def time(self):
        """Unix time in seconds, or None while the clock has not been set."""
        # int(): the codec takes an int; ports with float time (the Unix port) give a float.
        t = int(time.time()) + _EPOCH_OFFSET
        return t if t >= _VALID_AFTER else None

    # memory and resets
    def mem_free(self) -> int:
        return gc.mem_free()

    def mem_alloc(self) -> int:
        return gc.mem_alloc()

    def collect(self) -> None:
        gc.collect()

    def reset_cause(self) -> int:
        return machine.reset_cause()

    def reset(self) -> None:
        reset()

    def deepsleep(self, ms: int) -> None:
        """Power down for ms (power.sleep "deep"); the chip wakes with codes.DEEPSLEEP_RESET.

        RAM is lost; RTC time and flash are kept. WiFi is switched off first so the radio does
        not hold the supply up while the chip goes down.
        """
        if self._wlan is not None:
            self._wlan.active(False)
        machine.deepsleep(ms)

    def mpy_version(self) -> tuple:
        """The running MicroPython's version, e.g. (1, 24, 1)."""
        return tuple(sys.implementation.version[:3])

    def partition(self):
        """MicroPython's esp32.Partition class (flash partitions, OTA of the runtime image)."""
        import esp32  # start-up time and RAM: only a runtime update needs it

        return esp32.Partition

    def unique_id(self) -> str:
        return "".join("%02x" % b for b in machine.unique_id())

    def wdt_start(self, timeout_ms: int) -> None:
        # The ESP32 WDT cannot be stopped or slowed once started: start it only from the main loop.
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()

    # LED
    def led(self, on: bool) -> None:
        if self._led is not None:
            self._led.value(self._led_off ^ 1 if on else self._led_off)

    def pin_out(self, pin: int, value: int) -> None:
        """Drive a GPIO as an output (a sensor's power or enable switch)."""
        machine.Pin(pin, machine.Pin.OUT, value=value)

    # sensors
    def i2c(self):
        """The board's I2C bus (machine.I2C), or None when the board has none."""
        pins = self.board.get("i2c")
        if not pins:
            return None
        if self._i2c is None:
            self._i2c = machine.I2C(
                0,
                scl=machine.Pin(pins["scl"]),
                sda=machine.Pin(pins["sda"]),
                freq=pins.get("freq", 400000),
            )
        return self._i2c

    def ds18x20(self):
        """A ds18x20.DS18X20 on the board's 1-Wire pin, or None when the board has none."""
        pin = self.board.get("onewire_pin")
        if pin is None:
            return None
        # Device RAM: only a board with a 1-Wire pin loads (and has) these drivers
        import ds18x20
        import onewire

        return ds18x20.DS18X20(onewire.OneWire(machine.Pin(pin)))

    def lora_modem(self):
        """The board's LoRa radio as a micropython-lib `lora` async modem, or None without one.

        The drivers (`lora-sx127x` or `lora-sx126x`, and `lora-async`) are installed with mip when
        the board is flashed; board["radio"] names the chip and pins.
        """
        r = self.board.get("radio")
        if not r:
            return None
        s = r["spi"]
        spi = machine.SPI(s["id"], baudrate=s.get("baudrate", 2000000), polarity=0, phase=0,
                          sck=machine.Pin(s["sck"]), mosi=machine.Pin(s["mosi"]),
                          miso=machine.Pin(s["miso"]))

        def pin(name, mode=machine.Pin.IN):
            return None if r.get(name) is None else machine.Pin(r[name], mode)

        # Device RAM: only a board with a radio loads (and has) its driver
        if r["chip"] == "sx1262":
            from lora import AsyncSX1262  # pyright: ignore[reportMissingImports]

            return AsyncSX1262(spi=spi, cs=pin("cs", machine.Pin.OUT), busy=pin("busy"),
                           dio1=pin("dio1"), reset=pin("reset", machine.Pin.OUT),
                           dio2_rf_sw=r.get("dio2_rf_sw", True),
                           dio3_tcxo_millivolts=r.get("dio3_tcxo_millivolts"))
        from lora import AsyncSX1276  # pyright: ignore[reportMissingImports]

        return AsyncSX1276(spi=spi, cs=pin("cs", machine.Pin.OUT), dio0=pin("dio0"),
                           dio1=pin("dio1"), reset=pin("reset", machine.Pin.OUT))

    def adc_uv(self, pin: int) -> int:
        """One ADC reading on pin in microvolts (calibrated, 11 dB attenuation: 0..3.1 V)."""
        adc = machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)
        return adc.read_uv()

    # WiFi and network
    def wifi_connect(self, ssid: str, password: str) -> None:
        """Start joining ssid; returns at once, poll wifi_isconnected()."""
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
        self._wlan.active(True)
        if not self._wlan.isconnected():
            try:
                self._wlan.connect(ssid, password)
            except OSError:
                # The driver raises while a previous attempt is still in progress; that one goes on.
                pass

    def wifi_isconnected(self) -> bool:
        return self._wlan is not None and self._wlan.isconnected()

    def wifi_disconnect(self) -> None:
        if self._wlan is not None:
            self._wlan.disconnect()

    def wifi_rssi(self):
        """Signal strength of the joined access point in dBm, or None when not joined."""
        if not self.wifi_isconnected():
            return None
        try:
            return self._wlan.status("rssi")  # type: ignore[union-attr]
        except (OSError, ValueError):
            return None

    def _tls_context(self, ca):
        """One SSLContext per CA file for the life of the process, made at the first TLS
        connection (the MQTT link's, soon after boot) and used by every later one, HTTPS
        downloads included: a context made per connection needs a 3 KB block (less here,
        32-bit) on a heap cut into pieces by then (polylink_host/unixhal.py: what was seen)."""
        ctx = self._contexts.get(ca)
        if ctx is None:
            import ssl  # Device RAM: only a TLS connection needs it

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if ca:
                if self.time() is None:
                    self._set_clock()
                from polylink.net import pem  # Device RAM: only a TLS connection needs it

                pem.trust(ctx, self.path(ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.verify_mode = ssl.CERT_NONE
            self._contexts[ca] = ctx
        return ctx

    async def open_connection(self, host: str, port: int, tls=None):
        """An asyncio stream pair to host:port; tls None for plain TCP, or a dict {"ca": path}."""
        ctx = None
        if tls is not None:
            gc.collect()  # the connection's objects from a collected heap (unixhal.py)
            ctx = self._tls_context(tls.get("ca"))
        # MicroPython's asyncio passes host as server_hostname: mbedTLS then checks the name.
        return await asyncio.open_connection(host, port, ssl=ctx)

    def _set_clock(self):
        """Set the RTC by NTP: mbedTLS checks certificate dates against it (MicroPython >= 1.22),
        and a clock at 2000-01-01 would refuse every certificate as not yet valid."""
        try:
            import ntptime  # Device RAM: loaded only for the first TLS connection after boot

            ntptime.settime()
        except (OSError, ImportError) as e:
            raise OSError("clock not set (NTP: %s): certificate dates cannot be checked"
                          % (e,)) from None
