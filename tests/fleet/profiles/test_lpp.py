"""Cayenne LPP v1: vectors we wrote from the examples in myDevices' LPP specification, and every
type of the spec decoded and mapped to the registry."""

import pytest

from fleet.profiles import lpp
from fleet.profiles.decoding import Decoder
from fleet.profiles.jscodec import CodecError


def test_spec_example_two_temperature_sensors():
    # The spec's "Device with 2 temperature sensors": channel 3 27.2 °C, channel 5 25.5 °C.
    assert lpp.decode(bytes.fromhex("03670110056700FF")) == {"temperature_3": 27.2,
                                                             "temperature_5": 25.5}


def test_spec_example_negative_temperature():
    assert lpp.decode(bytes.fromhex("0167FFD7")) == {"temperature_1": -4.1}


def test_spec_example_accelerometer():
    assert lpp.decode(bytes.fromhex("067104D2FB2E0000")) == {
        "accelerometer_6": {"x": 1.234, "y": -1.234, "z": 0.0}}


def test_spec_example_gps():
    assert lpp.decode(bytes.fromhex("018806765FF2960A0003E8")) == {
        "gps_1": {"latitude": 42.3519, "longitude": -87.9094, "altitude": 10.0}}


def test_every_type_round_trips_on_its_own_channel():
    items = [(10, 0, 1), (11, 1, 0), (12, 2, -3.27), (13, 3, 2.5), (14, 101, 512),
             (15, 102, 1), (16, 103, -12.3), (17, 104, 48.5), (18, 113, (0.5, -0.25, 1.0)),
             (19, 115, 1013.2), (20, 134, (1.5, -2.25, 0.0)), (21, 136, (52.37, 4.89, -3.5))]
    out = lpp.decode(lpp.encode(items))
    assert len(out) == len(lpp.TYPES) == 12
    assert out["analog_in_12"] == -3.27 and out["relative_humidity_17"] == 48.5
    assert out["barometric_pressure_19"] == 1013.2
    assert out["gps_21"] == {"latitude": 52.37, "longitude": 4.89, "altitude": -3.5}
    assert out["gyrometer_20"] == {"x": 1.5, "y": -2.25, "z": 0.0}


def test_lpp_profile_maps_to_registry_units_with_channel_as_instance():
    dec = Decoder({"name": "lpp", "codec": "lpp", "fields": []})
    payload = lpp.encode([(1, 103, 21.5), (2, 104, 48.0), (3, 115, 1013.2), (4, 101, 300),
                          (5, 136, (52.37, 4.89, 1.0)), (6, 0, 1)])
    readings, _ = dec.decode(payload, 2, 0.0)
    got = {(qid, inst): round(v, 4) for qid, inst, v in readings}
    assert got == {(0, 1): 21.5, (1, 2): 48.0, (4, 3): 101320.0, (5, 4): 300.0,
                   (17, 5): 52.37, (18, 5): 4.89}


@pytest.mark.parametrize("hexpayload, why", [
    ("", "empty"), ("03", "without a type"), ("0367 01".replace(" ", ""), "needs 2 bytes"),
    ("03FF0000", "unknown LPP type 255")])
def test_bad_lpp_says_why(hexpayload, why):
    dec = Decoder({"name": "lpp", "codec": "lpp", "fields": []})
    with pytest.raises(CodecError, match=why):
        dec.decode(bytes.fromhex(hexpayload), 1, 0.0)
