"""A profile's field mapping: registry quantities, conversion into their SenML units, and a clear
error for what cannot be used."""

from pathlib import Path

import pytest

from fleet.profiles.decoding import Decoder, ProfileError, check
from fleet.profiles.jscodec import CodecError
from fleet.senml import units

CODECS = Path(__file__).parent / "codecs"
WEATHER = {"name": "acme-weather", "codec": "js", "interval": 600,
           "source": (CODECS / "vendor_weather.js").read_text(),
           "fields": [{"field": "air.temperature_f", "quantity": "temperature", "unit": "°F"},
                      {"field": "air.pressure_hpa", "quantity": "pressure", "unit": "hPa"},
                      {"field": "humidity_pct", "quantity": "humidity", "unit": "%"},
                      {"field": "battery_mv", "quantity": "battery_voltage", "unit": "mV"}]}


@pytest.mark.parametrize("value, unit, senml, want", [
    (212, "°F", "Cel", 100.0), (32, "degF", "Cel", 0.0), (-40, "F", "Cel", -40.0),
    (1013.25, "hPa", "Pa", 101325.0), (1013.25, "mbar", "Pa", 101325.0),
    (0.48, "/", "%RH", 48.0), (50, "%", "/", 0.5), (3710, "mV", "V", 3.71),
    (36, "km/h", "m/s", 10.0), (273.15, "K", "Cel", 0.0), (21.5, None, "Cel", 21.5),
    (21.5, "Cel", "Cel", 21.5)])
def test_unit_conversions(value, unit, senml, want):
    assert units.convert(value, unit, senml) == pytest.approx(want)


def test_vendor_codec_readings_in_senml_units():
    readings, out = Decoder(check(WEATHER)).decode(bytes.fromhex("02D227953010B8"), 2, 0.0)
    got = {qid: v for qid, _inst, v in readings}
    assert got == pytest.approx({0: 22.333333, 4: 101330.0, 1: 48.0, 2: 4.28})
    assert out["data"]["humidity_pct"] == 48


def test_fields_left_out_of_a_frame_give_no_reading():
    readings, out = Decoder(check(WEATHER)).decode(b"", 3, 0.0)
    assert readings == [] and out["warnings"] == ["device rebooted"]


def test_a_field_that_is_not_a_number_is_a_bad_frame():
    p = dict(WEATHER, source="function decodeUplink(i) { return {data: {humidity_pct: 'wet'}} }")
    with pytest.raises(CodecError, match="field humidity_pct is 'wet', not a number"):
        Decoder(check(p)).decode(b"", 2, 0.0)


def test_passthrough_uses_the_providers_decoded_payload():
    p = {"name": "tts-formatted", "codec": "passthrough",
         "fields": [{"field": "temp", "quantity": "temperature", "unit": "°F"}]}
    readings, _ = Decoder(check(p)).decode(b"\x01", 1, 0.0, {"temp": 50})
    assert readings == [(0, 0, pytest.approx(10.0))]
    with pytest.raises(CodecError, match="sent no decoded payload"):
        Decoder(check(p)).decode(b"\x01", 1, 0.0, None)


@pytest.mark.parametrize("change, why", [
    ({"name": "Bad Name"}, "name 'Bad Name' must be"),
    ({"codec": "xml"}, "codec 'xml' must be one of"),
    ({"codec": "polylink"}, "only the built-in profile"),
    ({"source": ""}, "needs its codec's JavaScript source"),
    ({"source": "function decodeUplink(i) {"}, "codec does not load"),
    ({"fields": [{"field": "x", "quantity": "radiation"}]}, "no quantity 'radiation'"),
    ({"fields": [{"field": "x", "quantity": "temperature", "unit": "hPa"}]},
     "cannot convert 'hPa' to 'Cel'"),
    ({"fields": [{"field": "x", "quantity": "temperature", "scale": 2}]}, "unknown key.s. scale"),
    ({"interval": 5}, "interval must be"),
    ({"codec": "lpp", "source": None, "commands": [{"name": "reboot"}]},
     "only a js codec can encode"),
])
def test_bad_profiles_say_what_is_wrong(change, why):
    with pytest.raises(ProfileError, match=why):
        check(dict(WEATHER, **change))
