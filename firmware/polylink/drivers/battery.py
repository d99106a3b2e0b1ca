"""Battery voltage from an ADC pin behind the board's resistor divider."""

import asyncio

from micropython import const

_SAMPLES = const(8)  # the ESP32 ADC is noisy; the mean of 8 reads is steady to about 5 mV


class BatteryError(OSError):
    """The battery reading is outside what any cell on this board can show."""


class Battery:
    """Battery voltage = ADC voltage * divider ratio (board.json battery.divider).

    Some boards switch the divider on with a pin (Heltec V3: ADC_Ctrl, GPIO37, low = on) so it
    draws nothing between readings: it is driven to enable_level only while reading.
    """

    def __init__(self, hal, adc_pin, divider, enable_pin=None, enable_level=1):
        self.hal = hal
        self.pin = adc_pin
        self.divider = divider
        self.enable_pin = enable_pin
        self.enable_level = enable_level

    def volts(self) -> float:
        total = 0
        for _ in range(_SAMPLES):
            total += self.hal.adc_uv(self.pin)
        return total * self.divider / (_SAMPLES * 1000000)

    async def read(self, out, inst=0):
        """Append (2, inst, volts) to out."""
        en = self.enable_pin
        if en is None:
            v = self.volts()
        else:
            self.hal.pin_out(en, self.enable_level)
            try:
                # A 100k divider behind a switch charges the ADC input in well under 10 ms.
                await asyncio.sleep(0.01)
                v = self.volts()
            finally:
                self.hal.pin_out(en, 1 - self.enable_level)
        if v < 0.5:
            raise BatteryError(
                "battery reads %.2f V: divider or ADC pin %d not connected" % (v, self.pin)
            )
        out.append((2, inst, v))
