"""Cayenne Low Power Payload (LPP) v1, written from myDevices' specification.

A payload is a run of [channel][type][value] items, as many as fit; several sensors of one type
are told apart by their channel. Fields are named as The Things Stack's LPP decoder names them
(`temperature_3`, `gps_1` with latitude/longitude/altitude) so a mapping written for it fits.
"""

# type -> (field name, [(sub-field or None, size, signed, scale)], default quantity, unit)
TYPES = {
    0: ("digital_in", [(None, 1, False, 1)], None, None),
    1: ("digital_out", [(None, 1, False, 1)], None, None),
    2: ("analog_in", [(None, 2, True, 0.01)], None, None),
    3: ("analog_out", [(None, 2, True, 0.01)], None, None),
    101: ("luminosity", [(None, 2, False, 1)], "illuminance", "lx"),
    102: ("presence", [(None, 1, False, 1)], None, None),
    103: ("temperature", [(None, 2, True, 0.1)], "temperature", "Cel"),
    104: ("relative_humidity", [(None, 1, False, 0.5)], "humidity", "%RH"),
    113: ("accelerometer", [("x", 2, True, 0.001), ("y", 2, True, 0.001),
                            ("z", 2, True, 0.001)], None, None),
    115: ("barometric_pressure", [(None, 2, False, 0.1)], "pressure", "hPa"),
    134: ("gyrometer", [("x", 2, True, 0.01), ("y", 2, True, 0.01), ("z", 2, True, 0.01)],
          None, None),
    136: ("gps", [("latitude", 3, True, 0.0001), ("longitude", 3, True, 0.0001),
                  ("altitude", 3, True, 0.01)], None, None),
}
# Sub-fields that have a registry quantity of their own.
SUB_QUANTITIES = {("gps", "latitude"): ("latitude", "lat"),
                  ("gps", "longitude"): ("longitude", "lon")}


class LppError(ValueError):
    """The payload is not Cayenne LPP; the text says at which byte and why."""


def _int(b: bytes, signed: bool) -> int:
    return int.from_bytes(b, "big", signed=signed)


def decode(payload: bytes) -> dict:
    """{field: value or {sub: value}} of every item; LppError on an unknown type or a short one."""
    out: dict = {}
    i = 0
    n = len(payload)
    if n == 0:
        raise LppError("empty payload")
    while i < n:
        if n - i < 2:
            raise LppError(f"byte {i}: a channel without a type")
        channel, kind = payload[i], payload[i + 1]
        spec = TYPES.get(kind)
        if spec is None:
            raise LppError(f"byte {i + 1}: unknown LPP type {kind}")
        name, parts, _q, _u = spec
        size = sum(p[1] for p in parts)
        if n - i - 2 < size:
            raise LppError(f"byte {i}: {name} needs {size} bytes, {n - i - 2} left")
        j = i + 2
        value: dict = {}
        for sub, width, signed, scale in parts:
            value[sub] = round(_int(payload[j:j + width], signed) * scale, 6)
            j += width
        out[f"{name}_{channel}"] = value[None] if None in value else value
        i = j
    return out


def mapped(decoded: dict) -> list[tuple[str, int, float, str]]:
    """(quantity, instance, value, unit) of the decoded items that have a registry quantity."""
    out = []
    by_name = {spec[0]: spec for spec in TYPES.values()}
    for key, value in decoded.items():
        name, _, ch = key.rpartition("_")
        spec = by_name.get(name)
        if spec is None or not ch.isdigit():
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                q = SUB_QUANTITIES.get((name, sub))
                if q:
                    out.append((q[0], int(ch), v, q[1]))
        elif spec[2]:
            out.append((spec[2], int(ch), value, spec[3]))
    return out


def encode(items: list[tuple[int, int, object]]) -> bytes:
    """(channel, type, value or tuple of values) items as an LPP payload (tests, downlinks)."""
    buf = bytearray()
    for channel, kind, value in items:
        _name, parts, _q, _u = TYPES[kind]
        values = value if isinstance(value, tuple) else (value,)
        buf += bytes((channel, kind))
        for (_sub, width, signed, scale), v in zip(parts, values, strict=True):
            buf += int(round(v / scale)).to_bytes(width, "big", signed=signed)
    return bytes(buf)
