"""Codec properties: round trips, an independent reading of the spec, fuzzing, spec vs code."""

import json
import math
import re
import struct
from fractions import Fraction
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from polylink import proto
from polylink.quantities import DIV, FMT, MUL, QUANTITIES, RMAX, RMIN, fmt_name

SPEC = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "protocol_v1.json").read_text(encoding="utf-8")
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA = {  # field name -> kind, per dict type, as docs/protocol.md lists them
    proto.STATUS: {"fw": "str", "uptime": "uint", "reset": "uint", "heap_free": "uint",
                   "rssi": "sint", "queue": "uint", "dropped": "uint", "boots": "uint",
                   "interval": "uint", "micropython": "str"},
    proto.EVENT: {"code": "uint", "value": "sint", "text": "str"},
    proto.RESULT: {"cid": "uint", "code": "uint", "value": "sint", "text": "str"},
    proto.COMMAND: {"cid": "uint", "cmd": "uint", "arg": "sint"},
    proto.CONFIG: {"cid": "uint", "interval": "uint", "status_interval": "uint"},
    proto.OTA_UP: {"state": "uint", "version": "str", "progress": "uint", "reason": "uint",
                   "text": "str", "rid": "uint", "bytes": "uint", "keys": "str"},
    proto.OTA_DOWN: {"op": "uint", "version": "str", "rid": "uint", "url": "str"},
}
REQUIRED = {proto.STATUS: ("fw", "uptime"), proto.EVENT: ("code",), proto.RESULT: ("cid", "code"),
            proto.COMMAND: ("cid", "cmd"), proto.CONFIG: ("cid",),
            proto.OTA_UP: ("state", "version"), proto.OTA_DOWN: ("op", "version")}


def scaled(qid, raw):
    q = QUANTITIES[qid]
    return raw * q[MUL] if q[DIV] == 1 else raw * q[MUL] / q[DIV]


def encode(mtype, seq, body, ts=None):
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[: proto.encode(buf, mtype, seq, body, ts)])


@st.composite
def readings(draw):
    """Readings that fit one frame: some instance-0 quantities, then a few extra instances."""
    qids = st.integers(0, len(QUANTITIES) - 1)
    base = draw(st.lists(qids, unique=True, max_size=len(QUANTITIES)))
    extra = draw(st.lists(st.tuples(qids, st.integers(1, 255)), unique=True, max_size=12))
    if not base and not extra:
        base = [draw(qids)]
    out = []
    for qid, inst in [(q, 0) for q in base] + extra:
        q = QUANTITIES[qid]
        out.append((qid, inst, scaled(qid, draw(st.integers(q[RMIN], q[RMAX])))))
    return draw(st.permutations(out))


def expected_order(rs):
    """Decoded order: instance 0 by ascending id, then extra records in the order given."""
    return sorted(r for r in rs if r[1] == 0) + [r for r in rs if r[1]]


def oracle_telemetry(frame):
    """Decode a TELEMETRY frame straight from the byte layout in docs/protocol.md, with struct."""
    header, seq = struct.unpack_from(">BH", frame)
    i, ts = 3, None
    if header & 0x10:
        (ts,) = struct.unpack_from(">I", frame, 3)
        i = 7
    mask = shift = 0
    while True:
        b = frame[i]
        i += 1
        mask |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break

    def value(qid, i):
        fmt = QUANTITIES[qid][FMT]
        size = fmt & 7
        raw = int.from_bytes(frame[i : i + size], "big", signed=bool(fmt & 8))
        return scaled(qid, raw), i + size

    out = []
    for qid in range(64):
        if mask >> qid & 1:
            v, i = value(qid, i)
            out.append((qid, 0, v))
    while i < len(frame):
        qid, inst = frame[i], frame[i + 1]
        v, i = value(qid, i + 2)
        out.append((qid, inst, v))
    return header >> 5, header & 0x0F, seq, ts, out


def protobuf_fields(data):
    """List (field number, wire type, value) of a protobuf message, read independently."""
    out, i = [], 0
    while i < len(data):
        def varint():
            nonlocal i
            v = shift = 0
            while True:
                b = data[i]
                i += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    return v

        key = varint()
        if key & 7 == 0:
            out.append((key >> 3, 0, varint()))
        else:
            n = varint()
            out.append((key >> 3, 2, bytes(data[i : i + n])))
            i += n
    return out


seqs = st.integers(0, 0xFFFF)
stamps = st.none() | st.integers(0, 0xFFFFFFFF)


@given(readings(), seqs, stamps)
@FUZZ
def test_telemetry_round_trips_and_matches_the_spec_oracle(rs, seq, ts):
    frame = encode(proto.TELEMETRY, seq, rs, ts)
    assert len(frame) <= proto.MAX_FRAME
    assert proto.decode(frame) == (proto.TELEMETRY, seq, ts, expected_order(rs))
    assert oracle_telemetry(frame) == (1, proto.TELEMETRY, seq, ts, expected_order(rs))


@given(st.integers(0, len(QUANTITIES) - 1), st.floats(allow_nan=False, allow_infinity=False))
@FUZZ
def test_any_in_range_float_lands_within_half_a_step(qid, x):
    q = QUANTITIES[qid]
    lo, hi = scaled(qid, q[RMIN]), scaled(qid, q[RMAX])
    assume(lo <= x <= hi)
    try:
        frame = encode(proto.TELEMETRY, 0, [(qid, 0, x)])
    except proto.FrameError as e:
        # Only rounding past an edge of the range may refuse an in-range float.
        assert "out of range" in str(e)
        return
    (_, _, got), = proto.decode(frame)[3]
    step = q[MUL] / q[DIV]
    assert abs(got - x) <= step / 2 * (1 + 1e-9) + abs(x) * 1e-15


def raw_by_the_spec(qid, value):
    """Section 4's rule read independently: exact quotient, nearest int, halves away from zero."""
    q = QUANTITIES[qid]
    if isinstance(value, int):
        exact = Fraction(value * q[DIV], q[MUL])
    else:  # binary64, multiplication first, then the division
        exact = Fraction(value * q[DIV] / q[MUL])
    sign = -1 if exact < 0 else 1
    return sign * math.floor(abs(exact) + Fraction(1, 2))


@given(st.integers(0, len(QUANTITIES) - 1), st.data())
@FUZZ
def test_rounding_follows_the_spec_rule_for_ints_floats_and_half_steps(qid, data):
    q = QUANTITIES[qid]
    raw = data.draw(st.integers(q[RMIN], q[RMAX] - 1))
    # A value on a step, half-way to the next one, or anywhere: as an int when it is one.
    n = data.draw(st.sampled_from([0, 1]))
    value = scaled(qid, raw) if n == 0 else (scaled(qid, raw) + scaled(qid, raw + 1)) / 2
    if data.draw(st.booleans()):
        value = data.draw(st.floats(scaled(qid, q[RMIN]), scaled(qid, q[RMAX])))
    for v in {value, int(value)} if value == int(value) else {value}:
        want = raw_by_the_spec(qid, v)
        if not q[RMIN] <= want <= q[RMAX]:
            continue
        frame = encode(proto.TELEMETRY, 0, [(qid, 0, v)])
        size = q[FMT] & 7
        assert int.from_bytes(frame[-size:], "big", signed=bool(q[FMT] & 8)) == want, v


def field_values(kind):
    if kind == "str":
        return st.text(max_size=20)  # 80 bytes at most: OTA_UP text has that limit
    if kind == "uint":
        return st.integers(0, 0xFFFFFFFF)
    return st.integers(-(2**31), 2**31 - 1)


@st.composite
def dict_messages(draw):
    mtype = draw(st.sampled_from(sorted(SCHEMA)))
    body = {}
    for name, kind in SCHEMA[mtype].items():
        if name in REQUIRED[mtype] or draw(st.booleans()):
            body[name] = draw(field_values(kind))
    return mtype, body


@given(dict_messages(), seqs, stamps)
@FUZZ
def test_dict_bodies_round_trip_as_protobuf(msg, seq, ts):
    mtype, body = msg
    frame = encode(mtype, seq, body, ts)
    assert proto.decode(frame) == (mtype, seq, ts, body)
    # The body is a plain protobuf message: field numbers follow the schema's order.
    fields = protobuf_fields(frame[7 if ts is not None else 3 :])
    names = list(SCHEMA[mtype])
    assert [names[no - 1] for no, _, _ in fields] == [n for n in names if n in body]
    for no, wt, v in fields:
        kind = SCHEMA[mtype][names[no - 1]]
        want = body[names[no - 1]]
        if kind == "str":
            assert (wt, v.decode()) == (2, want)
        elif kind == "uint":
            assert (wt, v) == (0, want)
        else:
            assert (wt, (v >> 1) ^ -(v & 1)) == (0, want)


@given(dict_messages(), st.integers(16, 2000), st.sampled_from([0, 2]), st.binary(max_size=8))
@FUZZ
def test_unknown_fields_from_newer_senders_are_skipped(msg, field_no, wire, payload):
    mtype, body = msg
    frame = bytearray(encode(mtype, 1, body))
    extra = bytearray()
    for v in [field_no << 3 | wire, len(payload) if wire == 2 else 300]:
        while v >= 0x80:
            extra.append(v & 0x7F | 0x80)
            v >>= 7
        extra.append(v)
    frame[3:3] = extra + (payload if wire == 2 else b"")
    assume(len(frame) <= proto.MAX_FRAME)
    assert proto.decode(bytes(frame))[3] == body


def check_decoder(frame):
    """Decoding raises only FrameError; whatever it accepts re-encodes to an equal decoding."""
    try:
        mtype, seq, ts, body = proto.decode(frame)
    except proto.FrameError as e:
        assert str(e)
        return
    assert proto.decode(encode(mtype, seq, body, ts)) == (mtype, seq, ts, body)


@given(st.binary(max_size=240))
@FUZZ
def test_random_bytes_never_crash_the_decoder(frame):
    check_decoder(frame)


@given(st.binary(max_size=240).map(lambda b: bytes([0x20 | (b[0] & 0x1F if b else 0)]) + b))
@FUZZ
def test_random_v1_frames_never_crash_the_decoder(frame):
    check_decoder(frame)


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
              st.integers(0, 300), st.integers(0, 255)),
    min_size=1, max_size=4,
)


@given(st.sampled_from([v["hex"] for v in VECTORS["valid"]]), mutations)
@FUZZ
def test_mutated_valid_frames_never_crash_the_decoder(hexframe, muts):
    frame = bytearray.fromhex(hexframe)
    for op, pos, byte in muts:
        pos = pos % (len(frame) + 1)
        if op == "insert":
            frame.insert(pos, byte)
        elif op == "truncate":
            del frame[pos:]
        elif pos < len(frame):
            if op == "flip":
                frame[pos] ^= 1 << (byte % 8)
            elif op == "set":
                frame[pos] = byte
            else:
                del frame[pos]
    check_decoder(bytes(frame))


@given(readings(), mutations)
@FUZZ
def test_mutated_generated_frames_never_crash_the_decoder(rs, muts):
    frame = bytearray(encode(proto.TELEMETRY, 5, rs, 1764288000))
    for op, pos, byte in muts:
        pos = pos % (len(frame) + 1)
        if op == "insert":
            frame.insert(pos, byte)
        elif op == "truncate":
            del frame[pos:]
        elif pos < len(frame):
            frame[pos] ^= 1 << (byte % 8)
    check_decoder(bytes(frame))


def test_oversized_frames_are_refused():
    frame = bytes.fromhex("2000010100d7") + bytes(217)
    assert len(frame) == proto.MAX_FRAME + 1
    try:
        proto.decode(frame)
    except proto.FrameError as e:
        assert "too long" in str(e)
    else:
        raise AssertionError("a 223-byte frame decoded")


@given(st.integers(0, 2**40), st.integers(-32767, 32767))
@FUZZ
def test_extend_seq_recovers_any_seq_within_half_the_window(last, delta):
    assume(last + delta >= 0)
    assert proto.extend_seq(last, (last + delta) & 0xFFFF) == last + delta


def test_spec_registry_table_matches_the_code():
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (\d+) [^|]+\| `([^`]+)` \| (\w+) \| (\d+) \| (\d+) "
                      r"\|[^|]+\|[^|]+\| (-?\d+) \.\. (-?\d+) \|$", SPEC, re.M)
    table = [(int(i), n, int(ipso), u, f, int(m), int(d), int(lo), int(hi))
             for i, n, ipso, u, f, m, d, lo, hi in rows]
    code = [(i, q[0], q[1], q[2], fmt_name(q[3]), q[4], q[5], q[6], q[7])
            for i, q in enumerate(QUANTITIES)]
    assert table == code


def test_every_hex_example_in_the_spec_is_a_vector():
    section = SPEC[SPEC.index("## 10. Worked examples"):]
    examples = set(re.findall(r"`([0-9a-f]{6,})`", section))
    vectors = {v["hex"] for v in VECTORS["valid"] + VECTORS["invalid"]}
    assert len(examples) >= 15
    assert examples <= vectors, examples - vectors


def test_every_spec_example_decodes_as_its_vector_says():
    for v in VECTORS["valid"]:
        if v["hex"] in SPEC:
            mtype, seq, ts, body = proto.decode(bytes.fromhex(v["hex"]))
            assert (mtype, seq, ts) == (v["mtype"], v["seq"], v["ts"])


# Random bytes, or code points (surrogates included) written as UTF-8 would write them.
CODE_POINTS = st.lists(st.integers(0, 0x10FFFF), max_size=10).map(
    lambda cs: "".join(map(chr, cs)).encode("utf-8", "surrogatepass"))


@given(st.binary(max_size=40) | CODE_POINTS)
@FUZZ
def test_text_fields_accept_exactly_what_strict_utf8_accepts(data):
    # The codec checks UTF-8 itself (MicroPython's decoder is lax); CPython's strict one is the
    # oracle here, and tests/firmware/test_proto.py holds the same line under MicroPython.
    frame = bytes([0x21, 0, 1, 0x0A, len(data)]) + data + b"\x10\x0c"
    try:
        want = data.decode("utf-8")
    except UnicodeDecodeError:
        want = None
    try:
        got = proto.decode(frame)[3]["fw"]
    except proto.FrameError as e:
        assert "bad UTF-8" in str(e)
        got = None
    assert got == want


def test_spec_protobuf_block_matches_the_code():
    block = SPEC[SPEC.index("```proto"):]
    block = block[: block.index("```", 3)]
    types = {"string": "str", "uint32": "uint", "sint32": "sint"}
    names = {"Status": proto.STATUS, "Event": proto.EVENT, "Result": proto.RESULT,
             "Command": proto.COMMAND, "Config": proto.CONFIG, "OtaUp": proto.OTA_UP,
             "OtaDown": proto.OTA_DOWN}
    spec = {}
    for msg, fields in re.findall(r"message (\w+)\s*\{([^}]*)\}", block):
        spec[names[msg]] = [(int(no), name, types[kind], rule == "required")
                            for rule, kind, name, no in
                            re.findall(r"(required|optional) (\w+) (\w+) = (\d+);", fields)]
    code = {m: [(no, name, "uint" if kind == 0 else "sint" if kind == 1 else "str", req)
                for no, name, kind, req in proto._SCHEMA[m]] for m in names.values()}
    assert spec == code


def test_spec_lets_every_dict_message_grow_by_new_fields():
    rule = re.search(r"\*\*new fields\*\* in ([^.]+?) take new field\s+numbers", SPEC)
    assert rule, "section 7 lost its rule for new fields"
    named = set(re.findall(r"[A-Z_]{4,}", rule.group(1)))
    assert named == {proto.TYPE_NAMES[m] for m in SCHEMA}, named


def test_architecture_topic_table_matches_the_spec():
    arch = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.compile(r"^\| `pl/v1/\{node\}/\w+` \|.*$", re.M)
    assert rows.findall(arch) == rows.findall(SPEC)
    assert "COMMAND, CONFIG or OTA_DOWN" in rows.findall(SPEC)[1]
