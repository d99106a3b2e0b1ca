"""DS18B20 probes on a 1-Wire bus, through a ds18x20.DS18X20 object the HAL provides."""

import asyncio

from micropython import const

_FAMILY_DS18B20 = const(0x28)
_CONVERSION_S = 0.75  # datasheet: 750 ms for a 12-bit conversion
_POWER_ON_C = 85.0  # the scratchpad's reset value: the probe never converted (brown-out or wiring)


class DS18B20Error(OSError):
    """No DS18B20 on the bus, or a probe returned an unusable reading."""


class DS18B20:
    """All DS18B20 probes on one bus; temperature instance i + 1 is probe i."""

    def __init__(self, ds, first_inst=1):
        self.ds = ds
        self.first_inst = first_inst
        self.roms = [rom for rom in ds.scan() if rom[0] == _FAMILY_DS18B20]
        if not self.roms:
            raise DS18B20Error("no DS18B20 found on the 1-Wire bus")

    async def read(self, out):
        """Convert on every probe, wait, append (0, inst, degC) per good probe."""
        self.ds.convert_temp()
        await asyncio.sleep(_CONVERSION_S)
        bad = 0
        for i, rom in enumerate(self.roms):
            try:
                t = self.ds.read_temp(rom)
            except Exception:
                # ds18x20 raises a bare Exception on a CRC mismatch (a glitch on a long cable).
                bad += 1
                continue
            if t is None or t == _POWER_ON_C or not -55.0 <= t <= 125.0:
                bad += 1
                continue
            out.append((0, self.first_inst + i, t))
        if bad == len(self.roms):
            raise DS18B20Error("all %d DS18B20 probes failed to read" % bad)
