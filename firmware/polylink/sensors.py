"""The node's sensor set (built from config and board) and its sampling schedule."""

import asyncio


class SensorError(OSError):
    """A sensor named in the config cannot be used on this board."""


class SensorSet:
    """Opens each configured sensor on first use; one failing sensor never stops the rest."""

    def __init__(self, hal, cfg):
        self.hal = hal
        self.cfg = cfg
        self.names = list(cfg.sensors)
        self.drivers: list = [None] * len(self.names)
        self.failures = 0  # sensor reads or opens that failed since boot

    def _open(self, name):
        # Device RAM: drivers are imported here, not at the top, so a node loads only the code of
        # its own sensors.
        hal = self.hal
        if name == "bme280":
            i2c = hal.i2c()
            if i2c is None:
                raise SensorError("bme280: the board has no I2C bus")
            from polylink.drivers.bme280 import BME280

            return BME280(i2c, self.cfg.bme280_addr)
        if name == "ds18b20":
            ds = hal.ds18x20()
            if ds is None:
                raise SensorError("ds18b20: the board has no 1-Wire pin")
            from polylink.drivers.ds18b20 import DS18B20

            return DS18B20(ds)
        if name == "battery":
            bat = self.cfg.board.get("battery")
            if not bat:
                raise SensorError("battery: the board has no battery section")
            if "pmu" in bat:
                i2c = hal.i2c()
                if i2c is None:
                    raise SensorError("battery: the board's power chip needs an I2C bus")
                from polylink.drivers.pmu import PMUBattery

                return PMUBattery(i2c, bat["pmu"], bat.get("i2c_addr", 0x34))
            from polylink.drivers.battery import Battery

            return Battery(hal, bat["adc_pin"], bat["divider"], bat.get("enable_pin"),
                           bat.get("enable_level", 1))
        raise SensorError("unknown sensor %r" % name)

    async def read(self, out, errors):
        """Append readings to out and (sensor index, message) per failing sensor to errors."""
        for i, name in enumerate(self.names):
            try:
                drv = self.drivers[i]
                if drv is None:
                    drv = self.drivers[i] = self._open(name)
                await drv.read(out)
            except OSError as e:
                # Reopen next time: a sensor that fell off the bus may come back (loose connector).
                self.drivers[i] = None
                self.failures += 1
                errors.append((i, "%s: %s" % (name, e)))


class Schedule:
    """Fixed-rate wake-ups every interval seconds; set_interval takes effect at once."""

    def __init__(self, hal, interval):
        self.hal = hal
        self.interval = interval
        self._due = hal.ticks_ms()
        self._changed = asyncio.Event()

    def set_interval(self, interval):
        self.interval = interval
        self._due = self.hal.ticks_ms()
        self._changed.set()

    async def wait(self):
        """Sleep until the next sample is due (at once on the first call)."""
        while True:
            left = self.hal.ticks_diff(self._due, self.hal.ticks_ms())
            if left <= 0:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left / 1000)
            except asyncio.TimeoutError:
                pass
        now = self.hal.ticks_ms()
        self._due = self.hal.ticks_add(self._due, self.interval * 1000)
        # After a long stall (debugger, blocked loop) skip the missed samples instead of bursting.
        if self.hal.ticks_diff(self._due, now) <= 0:
            self._due = self.hal.ticks_add(now, self.interval * 1000)
