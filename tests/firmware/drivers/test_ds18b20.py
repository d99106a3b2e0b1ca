"""ds18b20.py: probe discovery, bad readings skipped, all-bad is an error."""

from _check import eq, raises
from _fw import FakeDS
from polylink.drivers import ds18b20
from polylink.drivers.ds18b20 import DS18B20, DS18B20Error

ds18b20._CONVERSION_S = 0  # the fake converts instantly


async def test_reads_every_ds18b20_and_ignores_other_families():
    ds = FakeDS([21.5, -3.0625])
    p = DS18B20(ds)
    eq(len(p.roms), 2, "the DS18S20 (family 0x10) is not a DS18B20")
    out = []
    await p.read(out)
    eq(ds.converted, 1)
    eq(out, [(0, 1, 21.5), (0, 2, -3.0625)])


async def test_power_on_value_and_crc_error_are_skipped():
    p = DS18B20(FakeDS([85.0, Exception("CRC error"), 7.0]))
    out = []
    await p.read(out)
    eq(out, [(0, 3, 7.0)])


async def test_all_probes_failing_raises():
    p = DS18B20(FakeDS([85.0, Exception("CRC error")]))
    try:
        await p.read([])
    except DS18B20Error as e:
        eq("2" in str(e), True)
        return
    raise AssertionError("no error when every probe failed")


def test_empty_bus_is_an_error():
    raises(DS18B20Error, DS18B20, FakeDS([]))
