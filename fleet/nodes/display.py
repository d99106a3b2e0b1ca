"""How the web UI shows a quantity to a person: its name, its unit as people write it, its value.

The API, SenML and the store keep the registry's SenML names and units (`temperature`, `Cel`,
`Pa`); only what a person reads goes through here, so a page never shows `Cel` or `09e+05`.
"""

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from polylink import quantities

# SenML unit (RFC 8428 section 12.1, and the units of the node's STATUS) -> the symbol a person
# writes and the factor from the SenML value to the shown one. Every unit the UI shows a person
# comes through this one table.
UNITS = {
    "Cel": ("°C", 1),
    "%RH": ("%", 1),
    "%": ("%", 1),
    "V": ("V", 1),
    "A": ("A", 1),
    "W": ("W", 1),
    "Pa": ("hPa", 0.01),  # weather stations and forecasts say hectopascal
    "lx": ("lx", 1),
    "ppm": ("ppm", 1),
    "ug/m3": ("µg/m³", 1),
    "Bspl": ("dB", 10),  # a bel of sound pressure level is ten decibels
    "m": ("m", 1),
    "m/s": ("m/s", 1),
    "deg": ("°", 1),
    "lat": ("°", 1),
    "lon": ("°", 1),
    "count": ("", 1),
    "dBm": ("dBm", 1),
    "dB": ("dB", 1),
    "B": ("bytes", 1),
    "s": ("s", 1),
}
# Symbols written straight after the number, without a space: 270°, not 270 °.
NO_SPACE = {"°"}

# Registry name -> the name people say. A quantity missing here is a test failure, not a guess.
NAMES = {
    "temperature": "Temperature",
    "humidity": "Humidity",
    "battery_voltage": "Battery voltage",
    "battery_level": "Battery level",
    "pressure": "Air pressure",
    "illuminance": "Light",
    "co2": "CO₂",
    "pm2_5": "PM2.5",
    "pm10": "PM10",
    "sound_level": "Sound level",
    "distance": "Distance",
    "percentage": "Percentage",
    "counter": "Count",
    "wind_speed": "Wind speed",
    "wind_direction": "Wind direction",
    "current": "Current",
    "power": "Power",
    "latitude": "Latitude",
    "longitude": "Longitude",
}


class Shown(NamedTuple):
    """A quantity as a person reads it: label, unit symbol, factor from SenML, decimals."""

    label: str
    unit: str
    factor: float
    decimals: int | None  # None: as many as the value needs

    def title(self) -> str:
        """'Temperature in °C'; just the label when there is no unit."""
        return f"{self.label} in {self.unit}" if self.unit else self.label

    def text(self, value) -> str:
        """A stored (SenML) value as a person reads it, with its unit: '1013.2 hPa'."""
        if value is None:
            return "-"
        number = plain(value * self.factor, self.decimals)
        if not self.unit:
            return number
        return number + ("" if self.unit in NO_SPACE else " ") + self.unit


def unit(senml_unit: str | None) -> tuple[str, float]:
    """(symbol, factor) for a SenML unit; one this table does not know is shown as it is."""
    if not senml_unit:
        return "", 1
    return UNITS.get(senml_unit, (senml_unit, 1))


def _decimals(step: float) -> int:
    """Decimals that show a step of this size: 0.1 -> 1, 0.5 -> 1, 0.01 -> 2, 10 -> 0."""
    return max(0, -math.floor(math.log10(step) + 1e-9))


def quantity(qid: int, inst: int) -> Shown:
    """How a registry quantity of one sensor instance is shown: 'Temperature (sensor 2)'."""
    if 0 <= qid < quantities.COUNT:
        entry = quantities.QUANTITIES[qid]
        name = entry[quantities.NAME]
        label = NAMES.get(name, name.replace("_", " ").capitalize())
        symbol, factor = unit(entry[quantities.UNIT])
        decimals = _decimals(entry[quantities.MUL] / entry[quantities.DIV] * factor)
    else:
        # A quantity from a newer node: its id, and no unit we could vouch for (as in SenML).
        label, symbol, factor, decimals = f"Quantity {qid}", "", 1, None
    if inst:
        label = f"{label} (sensor {inst + 1})"
    return Shown(label, symbol, factor, decimals)


def measure(label: str, senml_unit: str | None, decimals: int | None = None) -> Shown:
    """How one of the node's own measures (RSSI, free heap ...) is shown."""
    return Shown(label, *unit(senml_unit), decimals)


def plain(value: float, decimals: int | None = None) -> str:
    """A number as people write it: never an exponent, no '-0'; None decimals: as needed."""
    if not math.isfinite(value) or abs(value) >= 1e15:
        return f"{value:.0f}" if math.isfinite(value) else str(value)
    # Half-way rounds up, as people round (float formatting would round 2.5 to 2).
    exact = Decimal(repr(float(value)))
    if decimals is None:
        text = f"{exact.quantize(Decimal('1e-6'), ROUND_HALF_UP):f}".rstrip("0").rstrip(".")
    else:
        text = f"{exact.quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP):f}"
    return text.lstrip("-") if float(text) == 0 else text

