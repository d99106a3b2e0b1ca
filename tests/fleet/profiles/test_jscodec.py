"""The JavaScript sandbox: TTS / ChirpStack v4 signatures, and each of its limits tried (time,
memory, stack, clock, no I/O), always with the codec's or the engine's own text."""

from pathlib import Path

import pytest

from fleet.profiles import jscodec
from fleet.profiles.jscodec import CodecError, JsCodec

CODECS = Path(__file__).parent / "codecs"


def codec(name: str) -> JsCodec:
    return JsCodec((CODECS / name).read_text())


def test_vendor_codec_gets_bytes_fport_and_recvtime_as_a_date():
    out = codec("vendor_weather.js").decode(bytes.fromhex("02D227953010B8"), 2, 1_764_000_000.0)
    assert out["data"] == {"air": {"temperature_f": 72.2, "pressure_hpa": 1013.3},
                           "humidity_pct": 48, "battery_mv": 4280, "received_year": 2025}
    assert out["warnings"] == []


def test_codec_errors_and_warnings_are_its_own_text():
    c = codec("vendor_weather.js")
    with pytest.raises(CodecError, match="payload too short: 3 bytes, need 7"):
        c.decode(b"\x00\x01\x02", 2, 0.0)
    assert c.decode(b"", 3, 0.0)["warnings"] == ["device rebooted"]


def test_encode_downlink():
    assert codec("vendor_weather.js").encode({"interval": 600}) == (b"\x01\x02\x58", 10)
    with pytest.raises(CodecError, match="interval .seconds. is required"):
        codec("vendor_weather.js").encode({})


def test_a_throwing_codec_gives_its_exception_text():
    with pytest.raises(CodecError, match="TypeError: cannot read byte 2 of the payload"):
        codec("throws.js").decode(b"\x01\x02", 1, 0.0)


def test_a_looping_codec_is_interrupted_and_the_sandbox_recovers():
    c = codec("loops.js")
    with pytest.raises(CodecError, match="longer than 100 ms"):
        c.decode(b"\x01", 1, 0.0)
    assert c.ctx is None  # thrown away; the next call builds a fresh one
    with pytest.raises(CodecError, match="longer than 100 ms"):
        c.decode(b"\x01", 1, 0.0)


def test_an_allocating_codec_hits_the_memory_limit():
    with pytest.raises(CodecError, match=f"more than {jscodec.MEMORY_LIMIT >> 20} MB"):
        codec("allocates.js").decode(b"\x01", 1, 0.0)


def test_unbounded_recursion_is_a_stack_overflow_not_a_crash():
    c = JsCodec("function decodeUplink(i) { function f(n) { return f(n + 1) + 1 } return f(0) }")
    with pytest.raises(CodecError, match="Maximum call stack size exceeded"):
        c.decode(b"", 1, 0.0)


def test_time_limit_is_per_call_not_per_codec():
    # 50 calls of ~5 ms each: far over 100 ms together, each well under it.
    c = JsCodec("function decodeUplink(i) { var s = 0; for (var k = 0; k < 100000; k++) s += k;"
                " return {data: {s: s}} }")
    for _ in range(50):
        assert c.decode(b"", 1, 0.0)["data"] == {"s": 4999950000}


@pytest.mark.parametrize("expr", ["Date.now()", "new Date().getTime()", "Date()",
                                  "new i.recvTime.constructor().getTime()"])
def test_no_clock(expr):
    c = JsCodec(f"function decodeUplink(i) {{ return {{data: {{t: {expr}}}}} }}")
    with pytest.raises(CodecError, match="reading the clock is not allowed"):
        c.decode(b"", 1, 0.0)


def test_no_file_network_or_module_access():
    c = JsCodec("function decodeUplink(i) { return {data: {g: [typeof require, typeof std,"
                " typeof os, typeof fetch, typeof XMLHttpRequest, typeof scriptArgs].join()}} }")
    assert c.decode(b"", 1, 0.0)["data"]["g"] == ",".join(["undefined"] * 6)
    with pytest.raises(CodecError, match="codec does not load"):
        JsCodec('import * as std from "std"; function decodeUplink(i) { return {data: {}} }')


@pytest.mark.parametrize("source, why", [
    ("function decodeUplink(i) { return 5 }", "must return an object, got a number"),
    ("function decodeUplink(i) { return {data: [1]} }", "no data object .data is an array"),
    ("function decodeUplink(i) { return {errors: ['bad crc']} }", "bad crc"),
    ("function nothing() {}", "defines no decodeUplink"),
])
def test_garbage_results(source, why):
    with pytest.raises(CodecError, match=why):
        JsCodec(source).decode(b"", 1, 0.0)


def test_a_codec_that_does_not_load_says_why():
    with pytest.raises(CodecError, match="codec does not load: SyntaxError"):
        JsCodec("function decodeUplink(i) {")


def test_memory_limit_holds_run_after_run():
    # The engine we tried first crashed the process on about one in three of these.
    c = codec("allocates.js")
    for _ in range(15):
        with pytest.raises(CodecError, match="out of memory"):
            c.decode(b"\x01", 1, 0.0)
    assert codec("vendor_weather.js").decode(b"", 3, 0.0)["data"] == {"event": "reboot"}
