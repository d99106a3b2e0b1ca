"""Registry of the quantities a TELEMETRY frame can carry (protocol v1, docs/protocol.md)."""

# A quantity id is a promise to every deployed node and every stored reading: ids are never
# reused or renumbered, a new quantity is appended with the next free id. The table is plain
# tuples of small ints and short strings so it costs a few hundred bytes on the device.

# Wire formats: the low 3 bits are the size in bytes, bit 3 says two's-complement signed.
U8 = 1
U16 = 2
U24 = 3
U32 = 4
S8 = 9
S16 = 10
S24 = 11
S32 = 12

# Fields of a registry entry, in tuple order.
NAME = 0  # SenML record name (n) and the name used by the API
IPSO = 1  # IPSO / LwM2M object id the quantity is taken from
UNIT = 2  # SenML unit symbol (RFC 8428 section 12.1, RFC 8798)
FMT = 3  # wire format, one of U8..S32
MUL = 4  # value = raw * MUL / DIV, exactly
DIV = 5
RMIN = 6  # declared range, in raw units (inclusive)
RMAX = 7

# Indexed by quantity id.
QUANTITIES = (
    ("temperature", 3303, "Cel", S16, 1, 10, -2731, 10000),  # 0: -273.1 .. 1000.0 Cel, 0.1
    ("humidity", 3304, "%RH", U8, 1, 2, 0, 200),  # 1: 0 .. 100 %RH, 0.5
    ("battery_voltage", 3316, "V", U16, 1, 100, 0, 6000),  # 2: 0 .. 60.00 V, 0.01
    ("battery_level", 3320, "%", U8, 1, 1, 0, 100),  # 3: 0 .. 100 %, 1
    ("pressure", 3315, "Pa", U16, 10, 1, 0, 20000),  # 4: 0 .. 200000 Pa, 10 (0.1 hPa)
    ("illuminance", 3301, "lx", U24, 1, 1, 0, 200000),  # 5: 0 .. 200000 lx, 1
    ("co2", 3325, "ppm", U16, 1, 1, 0, 40000),  # 6: 0 .. 40000 ppm, 1
    ("pm2_5", 3325, "ug/m3", U16, 1, 10, 0, 10000),  # 7: 0 .. 1000.0 ug/m3, 0.1
    ("pm10", 3325, "ug/m3", U16, 1, 10, 0, 10000),  # 8: 0 .. 1000.0 ug/m3, 0.1
    ("sound_level", 3324, "Bspl", U16, 1, 100, 0, 2000),  # 9: 0 .. 20.00 Bspl (0..200 dB), 0.01
    ("distance", 3330, "m", U16, 1, 1000, 0, 65535),  # 10: 0 .. 65.535 m, 0.001
    ("percentage", 3320, "%", U16, 1, 10, 0, 1000),  # 11: 0 .. 100.0 %, 0.1
    ("counter", 3200, "count", U32, 1, 1, 0, 4294967295),  # 12: 0 .. 2^32-1, 1
    ("wind_speed", 3346, "m/s", U16, 1, 10, 0, 1000),  # 13: 0 .. 100.0 m/s, 0.1
    ("wind_direction", 3332, "deg", U16, 1, 1, 0, 359),  # 14: 0 .. 359 deg, 1
    ("current", 3317, "A", S16, 1, 1000, -32768, 32767),  # 15: -32.768 .. 32.767 A, 0.001
    ("power", 3328, "W", S32, 1, 10, -100000000, 100000000),  # 16: +-10 MW, 0.1
    ("latitude", 3336, "lat", S32, 1, 10000000, -900000000, 900000000),  # 17: +-90 lat, 1e-7
    ("longitude", 3336, "lon", S32, 1, 10000000, -1800000000, 1800000000),  # 18: +-180, 1e-7
)

COUNT = len(QUANTITIES)


def lookup(name):
    """Return the quantity id registered under name, or None."""
    for qid in range(len(QUANTITIES)):
        if QUANTITIES[qid][NAME] == name:
            return qid
    return None


def fmt_name(fmt):
    """Return the wire format's name as the spec writes it, e.g. 's16'."""
    return ("s" if fmt & 8 else "u") + str((fmt & 7) * 8)
