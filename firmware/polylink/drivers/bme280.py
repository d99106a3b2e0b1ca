"""BME280 driver over I2C: forced-mode reads with the datasheet's integer compensation formulas."""

import asyncio

from micropython import const

_REG_CHIP_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CALIB_TP = const(0x88)  # 0x88..0xA1: T1..T3, P1..P9, (0xA0 unused), H1
_REG_CALIB_H = const(0xE1)  # 0xE1..0xE7: H2..H6
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)  # press[3], temp[3], hum[2]
_CHIP_ID = const(0x60)
_STATUS_MEASURING = const(0x08)
# Oversampling x1 for T, P and H, forced mode: one conversion per request, sensor sleeps otherwise.
_CTRL_MEAS_FORCED = const((1 << 5) | (1 << 2) | 1)
_OSRS_H_X1 = const(1)
_SKIPPED_20 = const(0x80000)  # the value a disabled temperature or pressure channel reads
_SKIPPED_16 = const(0x8000)

ADDRESSES = (0x76, 0x77)


class BME280Error(OSError):
    """The BME280 is missing, is not a BME280, or returned an unusable reading."""


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 65536 if v & 0x8000 else v


def _s12(v):
    return v - 4096 if v & 0x800 else v


def _s8(v):
    return v - 256 if v & 0x80 else v


class Calibration:
    """The factory trimming parameters dig_T1..dig_H6 read from the chip's NVM."""

    def __init__(self, tp, h):
        self.T1 = _u16(tp, 0)
        self.T2 = _s16(tp, 2)
        self.T3 = _s16(tp, 4)
        self.P1 = _u16(tp, 6)
        self.P2 = _s16(tp, 8)
        self.P3 = _s16(tp, 10)
        self.P4 = _s16(tp, 12)
        self.P5 = _s16(tp, 14)
        self.P6 = _s16(tp, 16)
        self.P7 = _s16(tp, 18)
        self.P8 = _s16(tp, 20)
        self.P9 = _s16(tp, 22)
        self.H1 = tp[25]
        self.H2 = _s16(h, 0)
        self.H3 = h[2]
        # H4 and H5 are 12-bit values that share the nibbles of register 0xE5.
        self.H4 = _s12((h[3] << 4) | (h[4] & 0x0F))
        self.H5 = _s12((h[5] << 4) | (h[4] >> 4))
        self.H6 = _s8(h[6])


def compensate_t(c, adc_t):
    """(temperature in 0.01 degC, t_fine) per BME280_compensate_T_int32 of the datasheet."""
    var1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    d = (adc_t >> 4) - c.T1
    var2 = (((d * d) >> 12) * c.T3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def _cdiv(a, b):
    # C integer division truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_p(c, adc_p, t_fine):
    """Pressure in Pa as Q24.8 (Pa * 256) per BME280_compensate_P_int64 of the datasheet."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * c.P6
    var2 = var2 + ((var1 * c.P5) << 17)
    var2 = var2 + (c.P4 << 35)
    var1 = ((var1 * var1 * c.P3) >> 8) + ((var1 * c.P2) << 12)
    var1 = (((1 << 47) + var1) * c.P1) >> 33
    if var1 == 0:
        return 0  # the datasheet's guard against division by zero
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - var2) * 3125, var1)
    var1 = (c.P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (c.P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (c.P7 << 4)


def compensate_h(c, adc_h, t_fine):
    """Relative humidity as Q22.10 (%RH * 1024) per bme280_compensate_H_int32 of the datasheet."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (c.H4 << 20) - (c.H5 * v)) + 16384) >> 15) * (
        ((((((v * c.H6) >> 10) * (((v * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192)
        >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


class BME280:
    """One BME280 on an I2C bus (machine.I2C or the host's simulated bus)."""

    def __init__(self, i2c, addr=0x76):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(8)
        self._one = bytearray(1)
        try:
            chip = i2c.readfrom_mem(addr, _REG_CHIP_ID, 1)[0]
        except OSError as e:
            raise BME280Error("no BME280 answers at I2C address 0x%02x (%s)" % (addr, e)) from None
        if chip != _CHIP_ID:
            raise BME280Error(
                "device at 0x%02x has chip id 0x%02x, a BME280 has 0x60" % (addr, chip)
            )
        self.cal = Calibration(
            i2c.readfrom_mem(addr, _REG_CALIB_TP, 26), i2c.readfrom_mem(addr, _REG_CALIB_H, 7)
        )
        self._write(_REG_CONFIG, 0)  # filter off, no standby: forced mode reads are independent
        self._write(_REG_CTRL_HUM, _OSRS_H_X1)  # takes effect only with the next ctrl_meas write

    def _write(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._one)

    async def measure(self):
        """One forced conversion: (0.01 degC, Pa * 256, %RH * 1024) as integers."""
        self._write(_REG_CTRL_MEAS, _CTRL_MEAS_FORCED)
        # Datasheet 9.1: at x1 oversampling a conversion takes at most 9.3 ms.
        await asyncio.sleep(0.01)
        for _ in range(10):
            self.i2c.readfrom_mem_into(self.addr, _REG_STATUS, self._one)
            if not self._one[0] & _STATUS_MEASURING:
                break
            await asyncio.sleep(0.005)
        else:
            raise BME280Error("BME280 at 0x%02x stays busy measuring" % self.addr)
        b = self._buf
        self.i2c.readfrom_mem_into(self.addr, _REG_DATA, b)
        adc_p = (b[0] << 12) | (b[1] << 4) | (b[2] >> 4)
        adc_t = (b[3] << 12) | (b[4] << 4) | (b[5] >> 4)
        adc_h = (b[6] << 8) | b[7]
        if adc_t == _SKIPPED_20 or adc_p == _SKIPPED_20 or adc_h == _SKIPPED_16:
            raise BME280Error("BME280 at 0x%02x returned a skipped measurement" % self.addr)
        t, t_fine = compensate_t(self.cal, adc_t)
        return t, compensate_p(self.cal, adc_p, t_fine), compensate_h(self.cal, adc_h, t_fine)

    async def read(self, out, inst=0):
        """Append (quantity id, instance, value) for temperature, humidity and pressure to out."""
        t, p, h = await self.measure()
        out.append((0, inst, t / 100))
        out.append((1, inst, h / 1024))
        out.append((4, inst, p / 256))
