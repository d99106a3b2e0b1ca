"""Battery voltage from the board's power-management chip (LilyGO T-Beam v1.x): AXP192 or AXP2101.

We read three registers, so this is ours rather than a whole PMU library in RAM. Register map
from the X-Powers datasheets: chip id at 0x03 (AXP192 0x03, AXP2101 0x4A); AXP192: battery
present is bit 5 of 0x01, the battery-voltage ADC is enabled by bit 7 of 0x82 and reads 12 bits
from 0x78 (8 high) and 0x79 (4 low) at 1.1 mV per step; AXP2101: battery present is bit 3 of
0x00, the ADC channel is enabled by bit 0 of 0x30 and reads 14 bits from 0x34/0x35 in mV.
"""

import asyncio

from micropython import const

from polylink.drivers.battery import BatteryError

_CHIP_ID = const(0x03)
AXP192_ID = const(0x03)
AXP2101_ID = const(0x4A)


class PMUBattery:
    """Battery voltage from an AXP192 or AXP2101 on the I2C bus, told apart by its chip id."""

    def __init__(self, i2c, chips, addr=0x34):
        self.i2c = i2c
        self.chips = chips
        self.addr = addr
        self.chip = None
        self._b1 = bytearray(1)
        self._b2 = bytearray(2)

    def _reg(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b1)
        return self._b1[0]

    async def _open(self):
        cid = self._reg(_CHIP_ID)
        chip = "axp192" if cid == AXP192_ID else "axp2101" if cid == AXP2101_ID else None
        if chip is None or chip not in self.chips:
            raise BatteryError("no %s at I2C 0x%02x (chip id 0x%02x)"
                               % (" or ".join(self.chips), self.addr, cid))
        reg, bit = (0x82, 0x80) if chip == "axp192" else (0x30, 0x01)
        old = self._reg(reg)
        if not old & bit:
            # Enabled only if off: other ADC channels the board uses keep their setting.
            self._b1[0] = old | bit
            self.i2c.writeto_mem(self.addr, reg, self._b1)
            await asyncio.sleep(0.05)  # the first conversion (25 Hz default rate) must finish
        self.chip = chip

    def volts(self) -> float:
        b = self._b2
        if self.chip == "axp192":
            if not self._reg(0x01) & 0x20:
                raise BatteryError("the AXP192 sees no battery connected")
            self.i2c.readfrom_mem_into(self.addr, 0x78, b)
            return ((b[0] << 4) | (b[1] & 0x0F)) * 0.0011
        if not self._reg(0x00) & 0x08:
            raise BatteryError("the AXP2101 sees no battery connected")
        self.i2c.readfrom_mem_into(self.addr, 0x34, b)
        return (((b[0] & 0x3F) << 8) | b[1]) * 0.001

    async def read(self, out, inst=0):
        """Append (2, inst, volts) to out."""
        if self.chip is None:
            await self._open()
        out.append((2, inst, self.volts()))
