"""Codec tests driven by tests/vectors/protocol_v1.json; they run under CPython and MicroPython."""

import json

from _check import eq, raises
from polylink import proto, quantities

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_VECTORS = None


def _vectors():
    global _VECTORS
    if _VECTORS is None:
        with open(_HERE + "/../vectors/protocol_v1.json") as f:
            _VECTORS = json.load(f)
    return _VECTORS


def _unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def _hex(b):
    return "".join("%02x" % x for x in b)


def _value(x):
    # JSON has no NaN or infinity, so the vectors spell such floats "float:nan".
    if isinstance(x, str) and x.startswith("float:"):
        return float(x[6:])
    return x


def _body(v):
    if v["mtype"] == proto.TELEMETRY and isinstance(v["body"], list):
        return [tuple(_value(x) for x in r) for r in v["body"]]
    return v["body"]


def _encode(mtype, seq, body, ts=None, buflen=proto.MAX_FRAME):
    buf = bytearray(buflen)
    n = proto.encode(buf, mtype, seq, body, ts)
    return bytes(buf[:n])


def test_vectors_file_has_every_kind_of_case():
    v = _vectors()
    eq(v["protocol_version"], proto.VERSION, "protocol_version")
    if len(v["valid"]) < 10 or len(v["invalid"]) < 30 or len(v["encode_invalid"]) < 20:
        raise AssertionError("vectors file lost cases")


def test_valid_vectors_decode():
    for v in _vectors()["valid"]:
        mtype, seq, ts, body = proto.decode(_unhex(v["hex"]))
        eq((mtype, seq, ts), (v["mtype"], v["seq"], v["ts"]), v["name"])
        eq(body, _body(v), v["name"])


def test_valid_vectors_encode_to_the_same_bytes():
    for v in _vectors()["valid"]:
        if v.get("decode_only"):
            continue
        eq(_hex(_encode(v["mtype"], v["seq"], _body(v), v["ts"])), v["hex"], v["name"])


def test_invalid_vectors_raise_frame_error_naming_the_fault():
    for v in _vectors()["invalid"]:
        e = raises(proto.FrameError, proto.decode, _unhex(v["hex"]))
        if v["error"] not in str(e):
            raise AssertionError("%s: error %r lacks %r" % (v["name"], str(e), v["error"]))


def test_encode_invalid_vectors_raise_frame_error():
    for v in _vectors()["encode_invalid"]:
        buf = bytearray(v.get("buflen", proto.MAX_FRAME))
        e = raises(proto.FrameError, proto.encode, buf, v["mtype"], v["seq"], _body(v), v["ts"])
        if v["error"] not in str(e):
            raise AssertionError("%s: error %r lacks %r" % (v["name"], str(e), v["error"]))


def test_reference_reading_meets_the_size_targets():
    readings = [(0, 0, 21.5), (1, 0, 48), (2, 0, 3.71)]
    eq(len(_encode(proto.TELEMETRY, 1, readings)), 9, "without timestamp")
    eq(len(_encode(proto.TELEMETRY, 1, readings, ts=1764288000)), 13, "with timestamp")


def test_frame_error_is_a_value_error():
    e = raises(ValueError, proto.decode, b"")
    if not isinstance(e, proto.FrameError):
        raise AssertionError("decode raised %r, not FrameError" % (e,))


def test_decode_takes_bytes_bytearray_and_memoryview():
    raw = _unhex("3000016928e6000700d7600173")
    want = proto.decode(raw)
    eq(proto.decode(bytearray(raw)), want, "bytearray")
    eq(proto.decode(memoryview(raw)), want, "memoryview")
    eq(proto.decode(memoryview(b"xx" + raw)[2:]), want, "memoryview slice")


def test_encode_writes_only_the_frame_and_reuses_the_buffer():
    buf = bytearray(b"\xee" * 32)
    n = proto.encode(buf, proto.TELEMETRY, 1, [(2, 0, 3.71)])
    eq(_hex(buf[:n]), "200001040173", "frame")
    eq(buf[n:], bytearray(b"\xee" * (32 - n)), "bytes after the frame")
    n = proto.encode(buf, proto.COMMAND, 2, {"cid": 1, "cmd": 3})
    eq(_hex(buf[:n]), "24000208011003", "second frame in the same buffer")
    mv = memoryview(buf)
    n = proto.encode(mv, proto.TELEMETRY, 3, [(1, 0, 50)])
    eq(_hex(buf[:n]), "2000030264", "into a memoryview")


def test_values_round_to_the_declared_resolution():
    _, _, _, body = proto.decode(_encode(proto.TELEMETRY, 1, [(4, 0, 101325), (0, 0, 21.54)]))
    eq(body, [(0, 0, 21.5), (4, 0, 101330)], "pressure to 10 Pa, temperature to 0.1 Cel")
    _, _, _, body = proto.decode(_encode(proto.TELEMETRY, 1, [(1, 0, 48), (0, 0, -40)]))
    eq(body, [(0, 0, -40.0), (1, 0, 48.0)], "int inputs")


def test_integer_resolution_quantities_decode_to_int():
    _, _, _, body = proto.decode(_encode(proto.TELEMETRY, 1, [(12, 0, 4000000000), (6, 0, 415)]))
    eq(body, [(6, 0, 415), (12, 0, 4000000000)], "values")
    for r in body:
        if not isinstance(r[2], int):
            raise AssertionError("quantity %d decoded to %r, not an int" % (r[0], r[2]))


def test_instance_order_is_preserved_for_extra_records():
    readings = [(0, 2, 1.0), (0, 0, 2.0), (0, 1, 3.0), (1, 5, 10)]
    _, _, _, body = proto.decode(_encode(proto.TELEMETRY, 9, readings))
    eq(body, [(0, 0, 2.0), (0, 2, 1.0), (0, 1, 3.0), (1, 5, 10.0)], "instance 0 first")


def test_status_roundtrip_keeps_negative_rssi_and_utf8():
    body = {"fw": "1.2.3-ß", "uptime": 0, "rssi": -120, "dropped": 0}
    eq(proto.decode(_encode(proto.STATUS, 5, body))[3], body, "status body")


def test_every_prefix_and_byte_flip_raises_only_frame_error():
    for v in _vectors()["valid"]:
        frame = _unhex(v["hex"])
        for n in range(len(frame)):
            try:
                proto.decode(frame[:n])
            except proto.FrameError:
                pass
        buf = bytearray(frame)
        for i in range(len(buf)):
            for bit in (0x01, 0x80):
                buf[i] ^= bit
                try:
                    proto.decode(buf)
                except proto.FrameError:
                    pass
                buf[i] ^= bit


def test_extend_seq_picks_the_nearest_candidate():
    eq(proto.extend_seq(None, 17), 17, "first frame")
    eq(proto.extend_seq(17, 18), 18, "next")
    eq(proto.extend_seq(18, 18), 18, "duplicate")
    eq(proto.extend_seq(65535, 0), 65536, "wrap")
    eq(proto.extend_seq(65536 + 10, 65530), 65530, "late frame from before the wrap")
    eq(proto.extend_seq(3 * 65536 + 5, 5), 3 * 65536 + 5, "duplicate in epoch 3")
    eq(proto.extend_seq(100, 100 + 32767), 100 + 32767, "largest forward jump")
    eq(proto.extend_seq(40000, 40000 - 32768 & 0xFFFF), 40000 - 32768, "largest backward step")
    eq(proto.extend_seq(5, 65000), 65000, "nothing precedes seq 0")


def test_type_names_and_directions():
    eq(proto.type_name(proto.TELEMETRY), "TELEMETRY", "0")
    eq(proto.type_name(proto.OTA_DOWN), "OTA_DOWN", "9")
    eq(proto.type_name(12), "type 12", "12")
    eq(proto.UPLINKS, (0, 1, 2, 3, 8), "uplinks")
    eq(proto.DOWNLINKS, (4, 5, 9), "downlinks")


def test_registry_entries_are_consistent():
    names = []
    for qid in range(len(quantities.QUANTITIES)):
        q = quantities.QUANTITIES[qid]
        eq(len(q), 8, "fields of quantity %d" % qid)
        fmt = q[quantities.FMT]
        bits = (fmt & 7) * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt & 8 else (0, (1 << bits) - 1)
        if not lo <= q[quantities.RMIN] <= q[quantities.RMAX] <= hi:
            raise AssertionError("quantity %d range exceeds %s" % (qid, quantities.fmt_name(fmt)))
        if q[quantities.MUL] < 1 or q[quantities.DIV] < 1:
            raise AssertionError("quantity %d resolution must be positive" % qid)
        if q[quantities.NAME] in names:
            raise AssertionError("duplicate name %s" % q[quantities.NAME])
        names.append(q[quantities.NAME])
        eq(quantities.lookup(q[quantities.NAME]), qid, "lookup")
    eq(quantities.lookup("no such thing"), None, "unknown name")


def test_registry_ids_are_stable():
    # Ids are a promise to deployed nodes: these rows may never change.
    q = quantities.QUANTITIES
    eq(q[0][:4], ("temperature", 3303, "Cel", quantities.S16), "0")
    eq(q[1][:4], ("humidity", 3304, "%RH", quantities.U8), "1")
    eq(q[2][:4], ("battery_voltage", 3316, "V", quantities.U16), "2")
    eq(quantities.fmt_name(quantities.S24), "s24", "fmt name")


def test_varints_hold_64_bits_and_field_numbers_29_bits():
    # The 10th byte of a varint carries bit 63 only: 0x01 is the last value a 64-bit decoder reads.
    e = raises(proto.FrameError, proto.decode, _unhex("20000180808080808080808001"))
    if "unknown quantity 63" not in str(e):
        raise AssertionError("bit 63 of the mask: %s" % e)
    e = raises(proto.FrameError, proto.decode, _unhex("20000180808080808080808002"))
    if "exceeds 64 bits" not in str(e):
        raise AssertionError("bit 64 of the mask: %s" % e)
    key = "f8ffffff0f"  # field 536870911 (2^29 - 1), wire type 0: the largest field number
    eq(proto.decode(_unhex("24000108011003" + key + "00"))[3], {"cid": 1, "cmd": 3}, "skipped")
    key = "8080808010"  # field 536870912
    e = raises(proto.FrameError, proto.decode, _unhex("24000108011003" + key + "00"))
    if "bad field number 536870912" not in str(e):
        raise AssertionError("field 2^29: %s" % e)


def _raw_of(frame, qid):
    # One instance-0 reading: its value bytes follow the 3-byte header and the mask.
    size = quantities.QUANTITIES[qid][quantities.FMT] & 7
    raw = 0
    for b in frame[-size:]:
        raw = raw << 8 | b
    if quantities.QUANTITIES[qid][quantities.FMT] & 8 and raw >> (size * 8 - 1):
        raw -= 1 << (size * 8)
    return raw


def test_half_steps_round_away_from_zero_on_every_runtime():
    # The same value must give the same bytes from any encoder: one rule, no "either way".
    vectors = _vectors()["rounding"]
    if len(vectors) < 10:
        raise AssertionError("rounding vectors lost cases")
    for v in vectors:
        frame = _encode(proto.TELEMETRY, 1, [(v["qid"], 0, v["value"])])
        eq(_raw_of(frame, v["qid"]), v["raw"], v["name"])
    e = raises(proto.FrameError, _encode, proto.TELEMETRY, 1, [(1, 0, 100.25)])
    if "out of range" not in str(e):
        raise AssertionError("humidity 100.25 rounds to raw 201: %s" % e)


def test_text_is_strict_utf8_on_every_runtime():
    # MicroPython's own decoder passes surrogates, code points past U+10FFFF and overlong forms;
    # the codec must refuse the same strings on every runtime (the invalid vectors hold more).
    for fw in ("eda080", "f4908080", "c0af", "e080af", "f888808080", "ed", "80", "ff"):
        frame = _unhex("2100010a%02x%s100c" % (len(fw) // 2, fw))
        e = raises(proto.FrameError, proto.decode, frame)
        if "bad UTF-8 in field 'fw'" not in str(e):
            raise AssertionError("%s: %s" % (fw, e))
    for fw in ("ed9fbf", "ee8080", "efbfbf", "f48fbfbf", "c2a0", "00"):
        frame = _unhex("2100010a%02x%s100c" % (len(fw) // 2, fw))
        eq(proto.decode(frame)[3]["fw"].encode("utf-8"), _unhex(fw), fw)
    # A lone surrogate has no UTF-8 form: CPython raises UnicodeEncodeError on it, MicroPython
    # writes its 3 bytes as if it had; the codec refuses it on both with a FrameError.
    for text in (chr(0xD800), "ok" + chr(0xDFFF)):
        e = raises(proto.FrameError, _encode, proto.EVENT, 1, {"code": 1, "text": text})
        if "bad UTF-8 in field 'text'" not in str(e):
            raise AssertionError("encoding %r: %s" % (text, e))


def test_ota_up_text_is_at_most_80_bytes_and_clip_cuts_at_a_character():
    body = {"state": 6, "version": "0.2.0", "text": "x" * 80}
    eq(proto.decode(_encode(proto.OTA_UP, 1, body))[3], body, "80 bytes")
    body["text"] = "é" * 40 + "x"
    e = raises(proto.FrameError, _encode, proto.OTA_UP, 1, body)
    if "too long: field 'text' has 81 bytes, limit 80" not in str(e):
        raise AssertionError(str(e))
    eq(_encode(proto.EVENT, 1, {"code": 1, "text": "x" * 81})[-1], ord("x"), "EVENT text: no limit")
    eq(proto.clip("é" * 41, 80), "é" * 40, "41 two-byte characters")
    eq(proto.clip("a" + "é" * 40, 80), "a" + "é" * 39, "a cut inside a character drops it")
    eq(proto.clip("short", 80), "short", "short text")
