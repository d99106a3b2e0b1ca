"""Conversion of a codec's units into the registry's SenML units (RFC 8428 section 12.1).

A field's unit is what the vendor's codec says (°F, hPa, %, mV ...); readings are stored in the
unit the registry gives the quantity (Cel, Pa, %RH ...), so every reading looks the same
downstream whatever device sent it. Only exact linear conversions: value * factor + offset.
"""

# (from, to) -> (factor, offset). Aliases below fold the ways vendors write a unit onto one.
_LINEAR = {
    ("degF", "Cel"): (5 / 9, -32 * 5 / 9),
    ("K", "Cel"): (1, -273.15),
    ("hPa", "Pa"): (100, 0),
    ("kPa", "Pa"): (1000, 0),
    ("bar", "Pa"): (100000, 0),
    ("mV", "V"): (0.001, 0),
    ("mA", "A"): (0.001, 0),
    ("kW", "W"): (1000, 0),
    ("mm", "m"): (0.001, 0),
    ("cm", "m"): (0.01, 0),
    ("km", "m"): (1000, 0),
    ("km/h", "m/s"): (1 / 3.6, 0),
    ("kn", "m/s"): (1852 / 3600, 0),
    ("dB", "Bspl"): (0.1, 0),  # a sound level in decibels: the registry keeps bels
    ("/", "%RH"): (100, 0),  # a ratio 0..1 to percent
    ("/", "%"): (100, 0),
    ("%", "/"): (0.01, 0),
    ("%", "%RH"): (1, 0),
    ("%RH", "%"): (1, 0),
    ("mg/m3", "ug/m3"): (1000, 0),
    ("klx", "lx"): (1000, 0),
}
ALIASES = {
    "°F": "degF", "F": "degF", "fahrenheit": "degF",
    "°C": "Cel", "C": "Cel", "celsius": "Cel", "degC": "Cel",
    "mbar": "hPa", "kelvin": "K", "ratio": "/", "dBA": "dB", "dB(A)": "dB",
    "µg/m³": "ug/m3", "µg/m3": "ug/m3", "ug/m³": "ug/m3", "mg/m³": "mg/m3",
    "km/h": "km/h", "kmh": "km/h", "knots": "kn", "lux": "lx", "RH": "%RH", "%rh": "%RH",
}


class UnitError(ValueError):
    """No exact conversion from a field's unit to the quantity's SenML unit is known."""


def canonical(unit: str | None) -> str | None:
    if unit is None or unit == "":
        return None
    return ALIASES.get(unit, ALIASES.get(unit.lower(), unit))


def converter(unit: str | None, senml_unit: str):
    """(factor, offset) taking a value in unit to senml_unit; None unit means already in it."""
    u = canonical(unit)
    if u is None or u == senml_unit:
        return (1, 0)
    try:
        return _LINEAR[(u, senml_unit)]
    except KeyError:
        known = sorted({a for a, b in _LINEAR if b == senml_unit} | {senml_unit})
        raise UnitError(f"cannot convert {unit!r} to {senml_unit!r}; "
                        f"units known for it: {', '.join(known)}") from None


def convert(value: float, unit: str | None, senml_unit: str) -> float:
    factor, offset = converter(unit, senml_unit)
    return value * factor + offset
