"""SenML output follows RFC 8428: base name/time, names, units, values."""

import json
import re

from polylink import quantities

from fleet.nodes import senml

# RFC 8428 section 4.5.1: name characters, first character alphanumeric.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*\Z")
FIELDS = {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
# RFC 8428 section 12.1 units plus RFC 8798 secondary units that the registry may use.
UNITS = {"Cel", "%RH", "V", "%", "Pa", "lx", "ppm", "ug/m3", "Bspl", "m", "count", "m/s", "deg",
         "A", "W", "lat", "lon", "K", "s", "dB", "dBm", "Hz", "J", "Wh", "kg", "m3", "l"}


def resolve(pack):
    """RFC 8428 section 4.6 resolution into full records."""
    out, bn, bt = [], "", 0.0
    for rec in pack:
        assert set(rec) <= FIELDS, rec
        bn = rec.get("bn", bn)
        bt = rec.get("bt", bt)
        name = bn + rec.get("n", "")
        assert NAME.match(name), name
        out.append({"n": name, "u": rec.get("u"), "v": rec["v"], "t": bt + rec.get("t", 0)})
    return out


def test_records_follow_rfc_8428():
    rows = [(1000.0, 0, 0, 21.5), (1000.0, 1, 0, 48.0), (1060.5, 2, 0, 3.71), (1070.0, 0, 2, 19.0)]
    pack = senml.records("node-7", rows)
    json.dumps(pack)  # plain JSON types only
    assert pack[0]["bn"] == "urn:dev:polylink:node-7:" and pack[0]["bt"] == 1000.0
    assert all("bn" not in r and "bt" not in r for r in pack[1:])
    full = resolve(pack)
    assert full == [
        {"n": "urn:dev:polylink:node-7:temperature", "u": "Cel", "v": 21.5, "t": 1000.0},
        {"n": "urn:dev:polylink:node-7:humidity", "u": "%RH", "v": 48.0, "t": 1000.0},
        {"n": "urn:dev:polylink:node-7:battery_voltage", "u": "V", "v": 3.71, "t": 1060.5},
        {"n": "urn:dev:polylink:node-7:temperature/2", "u": "Cel", "v": 19.0, "t": 1070.0},
    ]


def test_every_registry_quantity_has_a_valid_senml_name_and_unit():
    for qid in range(quantities.COUNT):
        name, unit = senml.name_and_unit(qid, 0)
        assert NAME.match("urn:dev:polylink:n:" + name)
        assert unit in UNITS, (qid, unit)


def test_unknown_quantity_keeps_its_value_without_a_unit():
    pack = senml.records("n", [(5.0, 200, 1, 7.0)])
    assert pack[0]["n"] == "q200/1" and "u" not in pack[0]


def test_empty_pack_and_frame_records():
    assert senml.records("n", []) == []
    pack = senml.frame_records("n", 50.0, [(0, 0, 21.5)])
    assert resolve(pack) == [{"n": "urn:dev:polylink:n:temperature", "u": "Cel", "v": 21.5,
                              "t": 50.0}]


def test_quantities_with_divisor_1_are_integers():
    # The store keeps values as REAL; the spec makes a div-1 quantity an integer, not 415.0.
    rows = [(1000.0, 6, 0, 415.0), (1000.0, 12, 0, 4_000_000_000.0), (1000.0, 4, 0, 101330.0),
            (1000.0, 3, 1, 37.0), (1000.0, 1, 0, 48.0), (1000.0, 0, 0, 21.0), (1000.0, 99, 0, 5.0)]
    got = [(r["n"], r["v"]) for r in senml.records("n", rows)]
    assert got == [("co2", 415), ("counter", 4_000_000_000), ("pressure", 101330),
                   ("battery_level/1", 37), ("humidity", 48.0), ("temperature", 21.0), ("q99", 5.0)]
    assert [type(v).__name__ for _, v in got] == ["int"] * 4 + ["float"] * 3
    assert '"v": 415}' in json.dumps(senml.records("n", rows[:1]))
