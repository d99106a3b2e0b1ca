"""battery.py: ADC microvolts through the divider, a disconnected divider is an error."""

from _check import eq
from _fw import FakeHAL, board
from polylink.battery import Battery, BatteryError


async def test_divider_scales_the_adc_voltage():
    hal = FakeHAL("/", board(), adc={35: 1855000})
    out = []
    await Battery(hal, 35, 2.0).read(out)
    eq(out, [(2, 0, 3.71)])


async def test_floating_pin_is_reported():
    hal = FakeHAL("/", board(), adc={35: 12000})
    try:
        await Battery(hal, 35, 2.0).read([])
    except BatteryError as e:
        eq("35" in str(e), True)
        return
    raise AssertionError("a floating ADC pin passed as a battery")
