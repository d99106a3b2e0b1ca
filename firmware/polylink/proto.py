"""The one codec of the Polylink unified protocol v1 (specified in docs/protocol.md)."""

from micropython import const

from polylink.quantities import DIV, FMT, MUL, NAME, QUANTITIES, RMAX, RMIN

VERSION = const(1)
MAX_FRAME = const(222)  # LoRaWAN EU868 DR5..7 application payload, repeater-compatible

TELEMETRY = const(0)
STATUS = const(1)
EVENT = const(2)
RESULT = const(3)
COMMAND = const(4)
CONFIG = const(5)
OTA_UP = const(8)  # update state reports (docs/ota.md)
OTA_DOWN = const(9)  # update offers

UPLINKS = (TELEMETRY, STATUS, EVENT, RESULT, OTA_UP)
DOWNLINKS = (COMMAND, CONFIG, OTA_DOWN)
TYPE_NAMES = ("TELEMETRY", "STATUS", "EVENT", "RESULT", "COMMAND", "CONFIG", None, None,
              "OTA_UP", "OTA_DOWN")

_T_FLAG = const(0x10)
_UINT_MAX = const(0xFFFFFFFF)
_FIELD_MAX = const(0x1FFFFFFF)  # the largest protobuf field number, 2^29 - 1
# Built once: a tuple literal in isinstance() would be allocated again on every call on MicroPython.
_NUMBER = (int, float)
_SEQUENCE = (list, tuple)

# Field kinds of the dict bodies; all ride on protobuf wire types 0 (varint) and 2 (bytes).
_UINT = const(0)  # protobuf uint32
_SINT = const(1)  # protobuf sint32 (zigzag)
_STR = const(2)  # protobuf string (UTF-8)
_TEXT80 = const(3)  # protobuf string (UTF-8) of at most TEXT80_MAX bytes
TEXT80_MAX = const(80)

# Per dict message type: (field number, name, kind, required), in field-number order.
_SCHEMA = (
    None,
    (  # STATUS
        (1, "fw", _STR, True),
        (2, "uptime", _UINT, True),
        (3, "reset", _UINT, False),
        (4, "heap_free", _UINT, False),
        (5, "rssi", _SINT, False),
        (6, "queue", _UINT, False),
        (7, "dropped", _UINT, False),
        (8, "boots", _UINT, False),
        (9, "interval", _UINT, False),
        (10, "micropython", _STR, False),
        (11, "lost", _UINT, False),
    ),
    (  # EVENT
        (1, "code", _UINT, True),
        (2, "value", _SINT, False),
        (3, "text", _STR, False),
    ),
    (  # RESULT
        (1, "cid", _UINT, True),
        (2, "code", _UINT, True),
        (3, "value", _SINT, False),
        (4, "text", _STR, False),
    ),
    (  # COMMAND
        (1, "cid", _UINT, True),
        (2, "cmd", _UINT, True),
        (3, "arg", _SINT, False),
    ),
    (  # CONFIG
        (1, "cid", _UINT, True),
        (2, "interval", _UINT, False),
        (3, "status_interval", _UINT, False),
    ),
    None,
    None,
    (  # OTA_UP
        (1, "state", _UINT, True),
        (2, "version", _STR, True),
        (3, "progress", _UINT, False),
        (4, "reason", _UINT, False),
        (5, "text", _TEXT80, False),
        (6, "rid", _UINT, False),
        (7, "bytes", _UINT, False),
        (8, "keys", _STR, False),
    ),
    (  # OTA_DOWN
        (1, "op", _UINT, True),
        (2, "version", _STR, True),
        (3, "rid", _UINT, False),
        (4, "url", _STR, False),
    ),
)


class FrameError(ValueError):
    """A frame (or a body to encode) that breaks protocol v1; the message says what and where."""


def type_name(mtype):
    """Return the message type's name, or 'type N' for a number v1 does not define."""
    if 0 <= mtype < len(TYPE_NAMES) and TYPE_NAMES[mtype]:
        return TYPE_NAMES[mtype]
    return "type %d" % mtype


def extend_seq(last, seq16):
    """Extend a 16-bit seq to 32 bits: the candidate nearest `last` (None if nothing seen yet)."""
    if last is None:
        return seq16
    delta = (seq16 - last) & 0xFFFF
    if delta < 0x8000:
        return last + delta
    ext = last + delta - 0x10000
    # Nothing precedes seq 0 of a node's life, so a "late" frame before it is a forward one.
    return ext if ext >= 0 else ext + 0x10000


# ---------------------------------------------------------------- encoding


def _room(buf, i, n):
    end = i + n
    if end > MAX_FRAME:
        raise FrameError("too long: frame would exceed %d bytes at offset %d" % (MAX_FRAME, i))
    if end > len(buf):
        raise FrameError("buffer too small: %d bytes, frame needs at least %d" % (len(buf), end))


def _put_varint(buf, i, v):
    while True:
        _room(buf, i, 1)
        if v < 0x80:
            buf[i] = v
            return i + 1
        buf[i] = (v & 0x7F) | 0x80
        v >>= 7
        i += 1


def _utf8_ok(b, i, end):
    """True if b[i:end] is well-formed UTF-8: no surrogate, overlong form or code past U+10FFFF."""
    # Checked here, not left to bytes.decode(): MicroPython's decoder passes all three.
    while i < end:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            n = 1
        elif 0xE0 <= c <= 0xEF:
            n = 2
            if c == 0xE0:
                lo = 0xA0  # below: an overlong form
            elif c == 0xED:
                hi = 0x9F  # above: a surrogate, U+D800..U+DFFF
        elif 0xF0 <= c <= 0xF4:
            n = 3
            if c == 0xF0:
                lo = 0x90  # below: an overlong form
            elif c == 0xF4:
                hi = 0x8F  # above: past U+10FFFF
        else:
            return False
        if i + n >= end or not lo <= b[i + 1] <= hi:
            return False
        for k in range(i + 2, i + n + 1):
            if not 0x80 <= b[k] <= 0xBF:
                return False
        i += n + 1
    return True


def _check_int(v, lo, hi, what):
    # CPython counts bool as an int; a True seq is a caller bug, not a 1.
    if not isinstance(v, int) or isinstance(v, bool):
        raise FrameError("%s must be an int, got %s" % (what, type(v).__name__))
    if v < lo or v > hi:
        raise FrameError("out of range: %s %d outside %d..%d" % (what, v, lo, hi))


def _scaled(q, raw):
    return raw * q[MUL] if q[DIV] == 1 else raw * q[MUL] / q[DIV]


def _halves_away(n, d):
    """n / d for ints (d > 0) to the nearest int, halves away from zero."""
    if n >= 0:
        return (2 * n + d) // (2 * d)
    return -((d - 2 * n) // (2 * d))


def _raw(qid, value):
    q = QUANTITIES[qid]
    mul = q[MUL]
    div = q[DIV]
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise FrameError("quantity %d (%s) value must be a number, got %s"
                         % (qid, q[NAME], type(value).__name__))
    # One rounding rule for every encoder (docs/protocol.md section 4): the nearest step, halves
    # away from zero. Not round(): CPython's is half to even, and MicroPython's follows the C
    # library of its port.
    if isinstance(value, int):
        n = value * div
        raw = n if mul == 1 else _halves_away(n, mul)
    else:
        x = value * div if mul == 1 else value * div / mul
        if x != x or x - x != 0:  # NaN, or inf (inf - inf is NaN)
            raise FrameError("quantity %d (%s) value %s is not finite" % (qid, q[NAME], value))
        # Range first, so that a huge float never turns into a big int.
        if x < q[RMIN] - 1 or x > q[RMAX] + 1:
            raw = q[RMIN] - 1 if x < 0 else q[RMAX] + 1
        else:
            raw = int(x)  # towards zero; x - raw is then exact, the fraction of x
            frac = x - raw
            if frac >= 0.5:
                raw += 1
            elif frac <= -0.5:
                raw -= 1
    if raw < q[RMIN] or raw > q[RMAX]:
        raise FrameError("out of range: quantity %d (%s) value %s outside %s..%s"
                         % (qid, q[NAME], value, _scaled(q, q[RMIN]), _scaled(q, q[RMAX])))
    return raw


def _put_value(buf, i, qid, value):
    raw = _raw(qid, value)
    size = QUANTITIES[qid][FMT] & 7
    _room(buf, i, size)
    k = i + size - 1
    while k >= i:
        buf[k] = raw & 0xFF  # & and >> on a negative int give its two's complement bytes
        raw >>= 8
        k -= 1
    return i + size


def _check_reading(r):
    if len(r) != 3:
        raise FrameError("reading must be (qid, inst, value), got %d items" % len(r))
    _check_int(r[0], 0, 255, "quantity id")
    if r[0] >= len(QUANTITIES):
        raise FrameError("unknown quantity %d (registry has 0..%d)" % (r[0], len(QUANTITIES) - 1))
    _check_int(r[1], 0, 255, "instance")


def _enc_telemetry(buf, i, readings):
    if not isinstance(readings, _SEQUENCE):
        raise FrameError("TELEMETRY body must be a list of (qid, inst, value)")
    if not readings:
        raise FrameError("empty telemetry: a TELEMETRY frame needs at least one reading")
    mask = 0
    for r in readings:
        _check_reading(r)
        if r[1] == 0:
            if mask >> r[0] & 1:
                raise FrameError("duplicate reading: quantity %d instance 0" % r[0])
            mask |= 1 << r[0]
    i = _put_varint(buf, i, mask)
    # The mask fixes the order of instance-0 values: ascending quantity id.
    for qid in range(len(QUANTITIES)):
        if mask >> qid & 1:
            for r in readings:
                if r[0] == qid and r[1] == 0:
                    i = _put_value(buf, i, qid, r[2])
                    break
    for k in range(len(readings)):
        qid, inst, value = readings[k]
        if inst:
            for m in range(k):
                if readings[m][0] == qid and readings[m][1] == inst:
                    raise FrameError("duplicate reading: quantity %d instance %d" % (qid, inst))
            _room(buf, i, 2)
            buf[i] = qid
            buf[i + 1] = inst
            i = _put_value(buf, i + 2, qid, value)
    return i


def _enc_fields(buf, i, mtype, body):
    if not isinstance(body, dict):
        raise FrameError("%s body must be a dict" % TYPE_NAMES[mtype])
    schema = _SCHEMA[mtype]
    for key in body:
        for f in schema:
            if f[1] == key:
                break
        else:
            raise FrameError("unknown field %r for %s" % (key, TYPE_NAMES[mtype]))
    for no, name, kind, required in schema:
        v = body.get(name)
        if v is None:
            if required:
                raise FrameError("missing required field '%s' in %s" % (name, TYPE_NAMES[mtype]))
            continue
        if kind >= _STR:
            if not isinstance(v, str):
                raise FrameError("field '%s' must be a str, got %s" % (name, type(v).__name__))
            try:
                data = v.encode("utf-8")
            except UnicodeError:  # CPython: a lone surrogate has no UTF-8 form
                data = None
            # MicroPython writes a surrogate's 3 bytes as if it had one: check what came out.
            if data is None or not _utf8_ok(data, 0, len(data)):
                raise FrameError("bad UTF-8 in field '%s': text with a surrogate cannot be sent"
                                 % name)
            if kind == _TEXT80 and len(data) > TEXT80_MAX:
                raise FrameError("too long: field '%s' has %d bytes, limit %d"
                                 % (name, len(data), TEXT80_MAX))
            i = _put_varint(buf, i, no << 3 | 2)
            i = _put_varint(buf, i, len(data))
            _room(buf, i, len(data))
            buf[i:i + len(data)] = data
            i += len(data)
        else:
            i = _put_varint(buf, i, no << 3)
            if kind == _UINT:
                _check_int(v, 0, _UINT_MAX, "field '%s'" % name)
                i = _put_varint(buf, i, v)
            else:
                _check_int(v, -0x80000000, 0x7FFFFFFF, "field '%s'" % name)
                i = _put_varint(buf, i, v << 1 if v >= 0 else ((-v) << 1) - 1)
    return i


def encode(buf, mtype, seq, body, ts=None):
    """Write one frame into bytearray buf from offset 0 and return its length."""
    if not isinstance(mtype, int) or not 0 <= mtype <= OTA_DOWN or mtype in (6, 7):
        raise FrameError("unknown message type %r" % (mtype,))
    _check_int(seq, 0, 0xFFFF, "seq")
    _room(buf, 0, 3)
    buf[0] = VERSION << 5 | mtype | (0 if ts is None else _T_FLAG)
    buf[1] = seq >> 8
    buf[2] = seq & 0xFF
    i = 3
    if ts is not None:
        _check_int(ts, 0, _UINT_MAX, "timestamp")
        _room(buf, 3, 4)
        # Unix time is past 2^30, a heap-allocated long on MicroPython: split it with two ops only.
        hi = ts >> 16
        lo = ts & 0xFFFF
        buf[3] = hi >> 8
        buf[4] = hi & 0xFF
        buf[5] = lo >> 8
        buf[6] = lo & 0xFF
        i = 7
    if mtype == TELEMETRY:
        return _enc_telemetry(buf, i, body)
    return _enc_fields(buf, i, mtype, body)


def clip(text, n):
    """Return text cut to at most n bytes of UTF-8, at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= n:
        return text
    while n and data[n] & 0xC0 == 0x80:  # a continuation byte: cut before its character
        n -= 1
    return data[:n].decode("utf-8")


# ---------------------------------------------------------------- decoding


def _get_varint(f, i, what):
    v = 0
    shift = 0
    start = i
    while True:
        if i >= len(f):
            raise FrameError("truncated: %s varint at offset %d runs past the end (frame has %d)"
                             % (what, start, len(f)))
        b = f[i]
        i += 1
        # The 10th byte holds bit 63 only: a 64-bit decoder (protobuf) would drop anything more
        # and read another number, so such a varint is refused rather than read differently.
        if shift == 63 and b > 1:
            if b & 0x80:
                raise FrameError("bad varint: %s at offset %d is longer than 10 bytes"
                                 % (what, start))
            raise FrameError("bad varint: %s at offset %d exceeds 64 bits" % (what, start))
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _get_value(f, i, qid, out, inst):
    q = QUANTITIES[qid]
    fmt = q[FMT]
    size = fmt & 7
    if i + size > len(f):
        raise FrameError("truncated: telemetry value for quantity %d needs %d bytes at offset %d,"
                         " frame has %d" % (qid, size, i, len(f)))
    raw = 0
    for k in range(i, i + size):
        raw = raw << 8 | f[k]
    if fmt & 8 and raw >> (size * 8 - 1):
        raw -= 1 << (size * 8)
    if raw < q[RMIN] or raw > q[RMAX]:
        raise FrameError("out of range: quantity %d (%s) value %s outside %s..%s at offset %d"
                         % (qid, q[NAME], _scaled(q, raw), _scaled(q, q[RMIN]),
                            _scaled(q, q[RMAX]), i))
    out.append((qid, inst, _scaled(q, raw)))
    return i + size


def _dec_telemetry(f, i):
    at = i
    mask, i = _get_varint(f, i, "presence mask")
    out = []
    if mask >> len(QUANTITIES):
        qid = len(QUANTITIES)
        while not mask >> qid & 1:
            qid += 1
        raise FrameError("unknown quantity %d in presence mask at offset %d" % (qid, at))
    for qid in range(len(QUANTITIES)):
        if mask >> qid & 1:
            i = _get_value(f, i, qid, out, 0)
    extra = len(out)
    while i < len(f):
        if i + 2 > len(f):
            raise FrameError("truncated: extra record at offset %d needs 2 header bytes, frame"
                             " has %d" % (i, len(f)))
        qid = f[i]
        inst = f[i + 1]
        if qid >= len(QUANTITIES):
            raise FrameError("unknown quantity %d in extra record at offset %d" % (qid, i))
        if inst == 0:
            raise FrameError("instance 0 in extra record at offset %d (instance 0 belongs in the"
                             " mask)" % i)
        for k in range(extra, len(out)):
            if out[k][0] == qid and out[k][1] == inst:
                raise FrameError("duplicate reading: quantity %d instance %d at offset %d"
                                 % (qid, inst, i))
        i = _get_value(f, i + 2, qid, out, inst)
    if not out:
        raise FrameError("empty telemetry: no readings")
    return out


def _dec_fields(f, i, mtype):
    schema = _SCHEMA[mtype]
    body = {}
    while i < len(f):
        at = i
        key, i = _get_varint(f, i, "field key")
        no = key >> 3
        wt = key & 7
        # Protobuf field numbers are 1..2^29-1, so a key fits 32 bits; a decoder that reads keys
        # as uint32 would see another field in a larger one.
        if no == 0 or no > _FIELD_MAX:
            raise FrameError("bad field number %d at offset %d" % (no, at))
        if wt != 0 and wt != 2:
            raise FrameError("unknown wire type %d (field %d) at offset %d" % (wt, no, at))
        v, i = _get_varint(f, i, "field %d" % no)
        if wt == 2:
            if i + v > len(f):
                raise FrameError("truncated: field %d needs %d bytes at offset %d, frame has %d"
                                 % (no, v, i, len(f)))
            start = i
            i += v
        for fdef in schema:
            if fdef[0] == no:
                break
        else:
            continue  # an unknown field from a newer v1 sender: skip it, as protobuf does
        name = fdef[1]
        kind = fdef[2]
        if name in body:
            raise FrameError("duplicate field '%s' at offset %d" % (name, at))
        if (wt == 2) != (kind >= _STR):
            raise FrameError("wrong wire type %d for field '%s' at offset %d" % (wt, name, at))
        if kind >= _STR:
            if kind == _TEXT80 and v > TEXT80_MAX:
                raise FrameError("too long: field '%s' has %d bytes, limit %d at offset %d"
                                 % (name, v, TEXT80_MAX, start))
            if not _utf8_ok(f, start, i):
                raise FrameError("bad UTF-8 in field '%s' at offset %d" % (name, start))
            body[name] = bytes(f[start:i]).decode("utf-8")
        elif kind == _UINT:
            if v > _UINT_MAX:
                raise FrameError("out of range: field '%s' %d exceeds uint32 at offset %d"
                                 % (name, v, at))
            body[name] = v
        else:
            if v > _UINT_MAX:
                raise FrameError("out of range: field '%s' exceeds sint32 at offset %d"
                                 % (name, at))
            body[name] = (v >> 1) ^ -(v & 1)
    for fdef in schema:
        if fdef[3] and fdef[1] not in body:
            raise FrameError("missing required field '%s' in %s" % (fdef[1], TYPE_NAMES[mtype]))
    return body


def decode(frame) -> tuple:  # body is a list or a dict by mtype: callers know which they asked for
    """Decode one frame (bytes-like) into (mtype, seq, ts, body); ts is None when absent."""
    n = len(frame)
    if n > MAX_FRAME:
        raise FrameError("too long: frame has %d bytes, limit %d" % (n, MAX_FRAME))
    if n < 3:
        raise FrameError("truncated: header needs 3 bytes at offset 0, frame has %d" % n)
    h = frame[0]
    version = h >> 5
    if version != VERSION:
        if version == 0:
            raise FrameError("bad version: 0 is invalid (byte 0x%02x at offset 0)" % h)
        raise FrameError("unsupported version %d at offset 0 (this decoder speaks %d)"
                         % (version, VERSION))
    mtype = h & 0x0F
    if mtype > OTA_DOWN or mtype == 6 or mtype == 7:
        raise FrameError("unknown message type %d at offset 0" % mtype)
    seq = frame[1] << 8 | frame[2]
    ts = None
    i = 3
    if h & _T_FLAG:
        if n < 7:
            raise FrameError("truncated: timestamp needs 4 bytes at offset 3, frame has %d" % n)
        ts = frame[3] << 24 | frame[4] << 16 | frame[5] << 8 | frame[6]
        i = 7
    if mtype == TELEMETRY:
        if i >= n:
            raise FrameError("truncated: presence mask at offset %d, frame has %d" % (i, n))
        return mtype, seq, ts, _dec_telemetry(frame, i)
    return mtype, seq, ts, _dec_fields(frame, i, mtype)
