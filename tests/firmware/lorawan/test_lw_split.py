"""A frame too large for the data rate is spread over frames by priority, never truncated."""

from _check import eq, raises
from polylink import proto
from polylink.lorawan.split import split


def _frame(readings, ts=1767225600):
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[: proto.encode(buf, proto.TELEMETRY, 7, readings, ts)])


def test_split_keeps_every_reading_and_puts_priority_first():
    readings = [(0, i, 20.0 + i) for i in range(12)] + [(2, 0, 3.7), (1, 0, 48.0)]
    big = _frame(readings)
    if len(big) <= 51:
        raise AssertionError("test frame should exceed DR0's 51 bytes, is %d" % len(big))
    seqs = [100]

    def take():
        seqs[0] += 1
        return seqs[0]

    parts = split(big, 51, take, priority=(2, 1))
    if len(parts) < 2:
        raise AssertionError("expected several frames")
    got = []
    first = []
    for i, p in enumerate(parts):
        if len(p) > 51:
            raise AssertionError("part %d has %d bytes" % (i, len(p)))
        mtype, seq, ts, body = proto.decode(p)
        eq((mtype, seq, ts), (proto.TELEMETRY, 101 + i, 1767225600))
        got.extend(body)
        if i == 0:
            first = [r[0] for r in body]
    if 2 not in first or 1 not in first:
        raise AssertionError("priority quantities not in the first frame: %r" % first)
    eq(sorted((q, i) for q, i, _ in got), sorted((q, i) for q, i, _ in readings), "none lost")


def test_small_frame_is_one_part_and_status_cannot_be_split():
    small = _frame([(0, 0, 21.5)])
    eq(len(split(small, 51, lambda: 1)), 1)
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.EVENT, 1, {"code": 2, "value": 0, "text": "x" * 60})
    raises(proto.FrameError, split, bytes(buf[:n]), 51, lambda: 1)
