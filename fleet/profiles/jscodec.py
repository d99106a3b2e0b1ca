"""JavaScript payload codecs with The Things Stack / ChirpStack v4 signatures, sandboxed.

`decodeUplink(input)` gets `{bytes: [numbers], fPort, recvTime: Date, variables}` and returns
`{data, warnings, errors}`; `encodeDownlink({data, variables})` returns `{bytes, fPort, ...}`,
so a vendor's published codec runs unchanged. The engine is QuickJS-ng through the
`quickjs-ng` package (PyPI, imported as `quickjs`; an abi3 manylinux wheel, actively kept). We
first took the older `quickjs` package (PetterS, last release 2023): its engine segfaulted the
worker on a codec that runs out of memory (about one run in three of
tests/fleet/profiles/codecs/allocates.js), which is exactly what the limit is for. V8 through
`mini-racer` was the other candidate: a 22 MB wheel and a whole isolate per codec for what
vendors' 2-KB codecs need. Each codec gets its own context with:

- a time limit per call (CALL_LIMIT_S, as The Things Stack and ChirpStack give a codec),
- a memory limit (MEMORY_LIMIT) and a stack limit, so allocating without end is an error,
- no I/O: QuickJS without its `std`/`os` modules has no file or network access, and the clock
  (`Date.now()`, `new Date()` without a time) throws, so a codec's output depends on its input.

A codec that throws, loops or runs out of memory raises CodecError with the engine's text; the
context is then thrown away and built again for the next frame (an interrupted context may be
left half-changed).
"""

import json
import math

import quickjs

CALL_LIMIT_S = 0.1
MEMORY_LIMIT = 16 << 20
STACK_LIMIT = 256 << 10
MAX_SOURCE = 256 << 10  # bytes of JavaScript; vendors' codecs are a few KB

# Runs before the codec: the clock goes, recvTime stays a real Date. The real constructor is
# only reachable through this closure (its prototype's constructor points at the wrapper).
_PRELUDE = r"""
(function (g) {
  var RealDate = Date;
  function clock() { throw new Error("reading the clock is not allowed in a codec"); }
  function SafeDate(a, b, c, d, e, f, h) {
    if (!(this instanceof SafeDate) || arguments.length === 0) clock();
    var args = [null].concat(Array.prototype.slice.call(arguments));
    return new (Function.prototype.bind.apply(RealDate, args))();
  }
  SafeDate.prototype = RealDate.prototype;
  RealDate.prototype.constructor = SafeDate;
  SafeDate.UTC = RealDate.UTC;
  SafeDate.parse = RealDate.parse;
  SafeDate.now = clock;
  g.Date = SafeDate;
  // The payload comes as hex (cheaper across the boundary than a JSON array of numbers).
  g.__plDecode = function (hex, fPort, recvTime, variables) {
    if (typeof decodeUplink !== "function") {
      throw new Error("the codec defines no decodeUplink(input)");
    }
    var bytes = new Array(hex.length >> 1);
    for (var i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
    var r = decodeUplink({bytes: bytes, fPort: fPort, recvTime: new RealDate(recvTime),
                          variables: variables ? JSON.parse(variables) : {}});
    return JSON.stringify(r === undefined ? null : r);
  };
  g.__plEncode = function (json) {
    var a = JSON.parse(json);
    if (typeof encodeDownlink !== "function") {
      throw new Error("the codec defines no encodeDownlink(input)");
    }
    var r = encodeDownlink({data: a.data, variables: a.variables || {}});
    return JSON.stringify(r || null);
  };
})(globalThis);
"""


class CodecError(Exception):
    """The codec failed on this input; the text is the codec's or the engine's own."""


def _engine_text(e: Exception) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if "interrupted" in first:
        return f"codec ran longer than {int(CALL_LIMIT_S * 1000)} ms (interrupted)"
    if "out of memory" in first:
        return f"codec used more than {MEMORY_LIMIT >> 20} MB (out of memory)"
    return first


class JsCodec:
    """One codec's sandbox; not thread-safe (one per worker thread or request)."""

    def __init__(self, source: str):
        if len(source.encode()) > MAX_SOURCE:
            raise CodecError(f"codec is larger than {MAX_SOURCE >> 10} KB")
        self.source = source
        self.ctx = None
        self._fresh()

    def _fresh(self):
        ctx = quickjs.Context()
        ctx.set_memory_limit(MEMORY_LIMIT)
        ctx.set_max_stack_size(STACK_LIMIT)
        ctx.set_time_limit(CALL_LIMIT_S)
        try:
            ctx.eval(_PRELUDE)
            ctx.eval(self.source)
        except quickjs.JSException as e:
            raise CodecError(f"codec does not load: {_engine_text(e)}") from None
        self.decode_fn = ctx.get("__plDecode")
        self.encode_fn = ctx.get("__plEncode")
        self.ctx = ctx

    def _call(self, fn_name: str, *args):
        if self.ctx is None:
            self._fresh()
        fn = self.decode_fn if fn_name == "decode" else self.encode_fn
        try:
            out = fn(*args)
        except quickjs.JSException as e:
            self.ctx = None  # an interrupted or starved context is not trusted again
            raise CodecError(_engine_text(e)) from None
        except Exception as e:  # noqa: BLE001 - anything the binding raises is the codec's fault
            self.ctx = None
            raise CodecError(f"codec failed: {e}") from None
        try:
            return json.loads(out)
        except (TypeError, ValueError):
            raise CodecError("codec returned something that is not JSON") from None

    def decode(self, payload: bytes, fport: int, recv_time: float, variables=None) -> dict:
        """The codec's data as a flat {field: number}; warnings kept, errors raise CodecError."""
        r = self._call("decode", payload.hex(), fport, recv_time * 1000,
                       json.dumps(variables) if variables else "")
        if not isinstance(r, dict):
            raise CodecError(f"decodeUplink must return an object, got {_kind(r)}")
        errors = r.get("errors")
        if errors:
            raise CodecError("; ".join(str(x) for x in errors) if isinstance(errors, list)
                             else str(errors))
        data = r.get("data")
        if not isinstance(data, dict):
            raise CodecError(f"decodeUplink returned no data object (data is {_kind(data)})")
        warnings = r.get("warnings") or []
        return {"data": data, "warnings": [str(w) for w in warnings]
                if isinstance(warnings, list) else [str(warnings)]}

    def encode(self, data: dict, variables=None) -> tuple[bytes, int | None]:
        """(payload, fPort) encodeDownlink makes of a command's data."""
        r = self._call("encode", json.dumps({"data": data, "variables": variables or {}}))
        if not isinstance(r, dict):
            raise CodecError(f"encodeDownlink must return an object, got {_kind(r)}")
        if r.get("errors"):
            raise CodecError("; ".join(str(x) for x in r["errors"]))
        b = r.get("bytes")
        if not isinstance(b, list) or not all(isinstance(x, int) and 0 <= x < 256 for x in b):
            raise CodecError("encodeDownlink returned no bytes array of 0..255")
        return bytes(b), r.get("fPort")


def _kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, float) and not math.isfinite(v):
        return "a non-finite number"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(v), "a number")
