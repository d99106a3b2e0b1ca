"""hal_esp32.py's pin handling, against a stand-in for MicroPython's machine module.

There is no ESP32 here: the stand-in records what the HAL asks of machine.Pin, as the real Pin
would drive the GPIO (Pin(id, Pin.OUT, value=v) sets the level; pin.value(v) changes it).
"""

import sys

from _check import eq
from _fw import board


class _Pin:
    OUT = 3
    levels = {}

    def __init__(self, pin, mode=-1, value=None):
        self.pin = pin
        if value is not None:
            _Pin.levels[pin] = value

    def value(self, v):
        _Pin.levels[self.pin] = v


class _Machine:
    Pin = _Pin


def _hal(**over):
    sys.modules["machine"] = _Machine
    sys.modules["network"] = _Machine
    try:
        from polylink.hal.esp32 import HAL

        b = board()
        b.update(over)
        return HAL(b)
    finally:
        del sys.modules["machine"]
        del sys.modules["network"]
        sys.modules.pop("polylink.hal.esp32", None)


def test_the_led_starts_off_and_follows_led():
    _Pin.levels.clear()
    hal = _hal(led_pin=2)
    eq(_Pin.levels[2], 0, "off at start")
    hal.led(True)
    eq(_Pin.levels[2], 1)
    hal.led(False)
    eq(_Pin.levels[2], 0)


def test_an_active_low_led_is_driven_inverted():
    # LilyGO T-Beam: the LED on GPIO4 lights when the pin is low.
    _Pin.levels.clear()
    hal = _hal(led_pin=4, led_active_low=True)
    eq(_Pin.levels[4], 1, "off at start means high")
    hal.led(True)
    eq(_Pin.levels[4], 0)
    hal.led(False)
    eq(_Pin.levels[4], 1)


def test_pin_out_drives_a_gpio():
    _Pin.levels.clear()
    _hal().pin_out(37, 0)
    eq(_Pin.levels[37], 0)
