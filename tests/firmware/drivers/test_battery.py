"""battery.py: ADC microvolts through the divider, a disconnected divider is an error."""

from _check import eq
from _fw import FakeHAL, board, boards_dir
from polylink.drivers.battery import Battery, BatteryError


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


async def test_a_switched_divider_is_on_only_while_reading():
    # Heltec V3: ADC_Ctrl GPIO37 low switches the 390k/100k divider onto GPIO1.
    hal = FakeHAL("/", board(), adc={1: 800000})
    hal.gates[1] = (37, 0)
    out = []
    await Battery(hal, 1, 4.9, enable_pin=37, enable_level=0).read(out)
    if abs(out[0][2] - 3.92) > 1e-9:
        raise AssertionError("read %r V" % (out[0][2],))
    eq(hal.pin_log, [(37, 0), (37, 1)], "on for the reading, off again after")


async def test_the_divider_is_switched_off_even_when_the_reading_fails():
    hal = FakeHAL("/", board(), adc={1: 1000})
    hal.gates[1] = (37, 1)
    try:
        await Battery(hal, 1, 4.9, enable_pin=37).read([])
    except BatteryError:
        eq(hal.pins[37], 0)
        return
    raise AssertionError("a floating divider passed as a battery")


class FakePMU:
    """An AXP192 or AXP2101 register file on machine.I2C's memory methods (datasheet map)."""

    def __init__(self, chip, millivolts, battery=True, adc_on=False):
        self.regs = bytearray(256)
        self.writes = []
        if chip == "axp192":
            self.regs[0x03] = 0x03
            self.regs[0x01] = 0x20 if battery else 0
            self.regs[0x82] = 0x03 | (0x80 if adc_on else 0)
            raw = int(millivolts / 1.1 + 0.5)
            self.regs[0x78], self.regs[0x79] = raw >> 4, raw & 0x0F
        elif chip == "axp2101":
            self.regs[0x03] = 0x4A
            self.regs[0x00] = 0x08 if battery else 0
            self.regs[0x30] = 0x02 | (0x01 if adc_on else 0)
            self.regs[0x34], self.regs[0x35] = millivolts >> 8, millivolts & 0xFF
        else:
            self.regs[0x03] = 0x47  # some other chip answering at 0x34

    def readfrom_mem_into(self, addr, reg, buf):
        if addr != 0x34:
            raise OSError(19)  # ENODEV: nothing acknowledged
        for i in range(len(buf)):
            buf[i] = self.regs[reg + i]

    def writeto_mem(self, addr, reg, buf):
        self.writes.append((reg, bytes(buf)))
        for i in range(len(buf)):
            self.regs[reg + i] = buf[i]


async def test_axp192_battery_voltage_and_its_adc_is_switched_on():
    from polylink.drivers.pmu import PMUBattery

    bus = FakePMU("axp192", 3987)
    out = []
    await PMUBattery(bus, ["axp192", "axp2101"]).read(out)
    if abs(out[0][2] - 3.987) > 0.0011:
        raise AssertionError("read %r V" % (out[0][2],))
    eq(bus.writes, [(0x82, bytes([0x83]))], "battery ADC enabled, other channels kept")


async def test_axp2101_battery_voltage_with_its_adc_already_on():
    from polylink.drivers.pmu import PMUBattery

    bus = FakePMU("axp2101", 4105, adc_on=True)
    out = []
    await PMUBattery(bus, ["axp192", "axp2101"]).read(out, 1)
    eq(out, [(2, 1, 4.105)])
    eq(bus.writes, [], "nothing written when the ADC already runs")


async def test_pmu_without_battery_or_of_the_wrong_kind_is_a_clear_error():
    from polylink.drivers.pmu import PMUBattery

    for bus, chips, words in ((FakePMU("axp192", 0, battery=False), ["axp192"], "no battery"),
                              (FakePMU("axp2101", 0, battery=False), ["axp2101"], "no battery"),
                              (FakePMU("other", 0), ["axp192", "axp2101"], "chip id 0x47"),
                              (FakePMU("axp2101", 3900), ["axp192"], "no axp192")):
        try:
            await PMUBattery(bus, chips).read([])
        except BatteryError as e:
            eq(words in str(e), True, str(e))
            continue
        raise AssertionError("read a battery from %r" % (words,))


async def test_the_tbeam_board_file_reads_its_battery_from_the_power_chip():
    import json

    from polylink import config
    from polylink.sensors import SensorSet

    with open(boards_dir() + "/LILYGO_TBEAM_V1.json") as f:
        tbeam = config.validate_board(json.load(f))
    cfg = config.validate({"node": "tbeam-1", "mqtt": {"host": "fleet.local"}}, tbeam)
    out, errors = [], []
    await SensorSet(FakeHAL("/", tbeam, i2c=FakePMU("axp2101", 3811)), cfg).read(out, errors)
    eq((out, errors), ([(2, 0, 3.811)], []))
