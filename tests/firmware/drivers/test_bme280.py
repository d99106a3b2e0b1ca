"""bme280.py: the datasheet's integer compensation and the forced-mode register protocol."""

from _check import eq, raises
from _fw import FakeBME280Bus
from polylink.drivers import bme280
from polylink.drivers.bme280 import BME280, BME280Error


def test_temperature_and_pressure_match_the_datasheet_example():
    bus = FakeBME280Bus()
    s = BME280(bus)
    t, t_fine = bme280.compensate_t(s.cal, 519888)
    eq(t, 2508, "0.01 degC")
    eq(t_fine, 128422)
    p = bme280.compensate_p(s.cal, 415148, t_fine) / 256
    # The datasheet's float formula gives 100653.27 Pa; the 64-bit integer one agrees to 0.1.
    if abs(p - 100653.27) > 0.1:
        raise AssertionError("pressure %r Pa" % p)


def test_calibration_unpacks_shared_nibbles():
    s = BME280(FakeBME280Bus())
    eq((s.cal.T1, s.cal.T2, s.cal.T3), (27504, 26435, -1000))
    eq((s.cal.P8, s.cal.P9), (-14600, 6000))
    eq((s.cal.H1, s.cal.H2, s.cal.H3, s.cal.H4, s.cal.H5, s.cal.H6), (75, 362, 0, 313, 50, 30))


def test_humidity_is_monotonic_and_clamped():
    s = BME280(FakeBME280Bus())
    _, tf = bme280.compensate_t(s.cal, 519888)
    last = -1
    for adc_h in range(20000, 40000, 1000):
        h = bme280.compensate_h(s.cal, adc_h, tf)
        if h < last:
            raise AssertionError("humidity fell from %d to %d at adc %d" % (last, h, adc_h))
        last = h
    eq(bme280.compensate_h(s.cal, 0, tf), 0)
    eq(bme280.compensate_h(s.cal, 65535, tf), 100 * 1024, "clamped at 100 %RH")


async def test_forced_read_writes_ctrl_registers_and_reports_values():
    bus = FakeBME280Bus()
    s = BME280(bus)
    out = []
    await s.read(out)
    regs = [w[0] for w in bus.writes]
    # ctrl_hum must precede ctrl_meas: it only takes effect with the next ctrl_meas write.
    if regs.index(0xF2) > regs.index(0xF4):
        raise AssertionError("ctrl_hum written after ctrl_meas: %r" % regs)
    eq(bus.writes[-1], (0xF4, bytes((0x25,))), "T x1, P x1, forced mode")
    eq(out[0], (0, 0, 25.08))
    eq(out[1][0], 1)
    if not 0 <= out[1][2] <= 100:
        raise AssertionError("humidity %r" % (out[1],))
    eq(out[2][0], 4)
    if abs(out[2][2] - 100653.27) > 0.1:
        raise AssertionError("pressure %r" % (out[2],))


def test_wrong_chip_and_missing_device_are_named_errors():
    e = raises(BME280Error, BME280, FakeBME280Bus(chip=0x58))
    eq("0x58" in str(e), True, "names the BMP280 chip id")
    e = raises(BME280Error, BME280, FakeBME280Bus(addr=0x77))
    eq("0x76" in str(e), True)


async def test_skipped_measurement_is_an_error():
    bus = FakeBME280Bus(adc_h=0x8000)
    s = BME280(bus)
    try:
        await s.measure()
    except BME280Error:
        return
    raise AssertionError("a skipped humidity channel was accepted")
