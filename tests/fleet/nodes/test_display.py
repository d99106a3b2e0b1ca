"""What a person reads for a quantity: names, units and numbers (fleet/nodes/display.py)."""

import pytest
from polylink import quantities

from fleet.nodes import display
from fleet.nodes.senml import name_and_unit


def test_every_registry_quantity_has_a_name_and_a_unit_people_use():
    for qid, entry in enumerate(quantities.QUANTITIES):
        assert entry[quantities.NAME] in display.NAMES, f"quantity {qid} has no display name"
        assert entry[quantities.UNIT] in display.UNITS, f"unit {entry[quantities.UNIT]} unknown"


@pytest.mark.parametrize(("qid", "inst", "value", "title", "text"), [
    (0, 0, 21.5, "Temperature in °C", "21.5 °C"),
    (0, 1, 19.0, "Temperature (sensor 2) in °C", "19.0 °C"),
    (1, 0, 48.5, "Humidity in %", "48.5 %"),
    (2, 0, 3.714, "Battery voltage in V", "3.71 V"),
    (4, 0, 101330.0, "Air pressure in hPa", "1013.3 hPa"),
    (7, 0, 12.3, "PM2.5 in µg/m³", "12.3 µg/m³"),
    (9, 0, 6.55, "Sound level in dB", "65.5 dB"),
    (14, 0, 270.0, "Wind direction in °", "270°"),
    (12, 0, 1234567.0, "Count", "1234567"),
    (0, 0, -0.04, "Temperature in °C", "0.0 °C"),  # never "-0.0"
    (99, 2, 1.5e6, "Quantity 99 (sensor 3)", "1500000"),  # from a newer node: no unit vouched
])
def test_quantities_as_people_say_and_write_them(qid, inst, value, title, text):
    shown = display.quantity(qid, inst)
    assert shown.title() == title and shown.text(value) == text


def test_the_api_and_senml_keep_senml_names_and_units():
    assert name_and_unit(0, 1) == ("temperature/1", "Cel")
    assert name_and_unit(4, 0) == ("pressure", "Pa")


def test_the_nodes_own_measures_use_the_same_table():
    assert display.measure("Free heap", "B").text(41234) == "41234 bytes"
    assert display.measure("RSSI", "dBm").text(-67) == "-67 dBm"
    assert display.measure("Queue", "").title() == "Queue"


@pytest.mark.parametrize(("value", "decimals", "text"), [
    (1e21, None, "1000000000000000000000"), (1e16, 2, "10000000000000000"),
    (123456.7891, None, "123456.7891"), (0.1 + 0.2, None, "0.3"), (-0.0, 1, "0.0"),
    (2.5, 0, "3"), (1013.25, 1, "1013.3"), (-12.0, None, "-12"), (3.14159, 2, "3.14"),
])
def test_plain_numbers_have_no_exponent(value, decimals, text):
    assert display.plain(value, decimals) == text
