"""store.py: FIFO order, survival across reboot, bounded with oldest dropped and counted."""

import os

from _check import eq
from _fw import rmtree, tmpdir
from polylink.store import Store, StoreError


def _frame(i, n=10):
    return bytearray(bytes((i & 0xFF,)) * n)


def _drain(s, buf):
    got = []
    while True:
        n = s.peek(buf)
        if not n:
            return got
        got.append(bytes(buf[:n]))
        eq(s.pop(s.head_idx), True)


def test_fifo_order_and_segments_rotate():
    d = tmpdir("st")
    try:
        s = Store(d + "/q", 100, seg_records=4)
        for i in range(10):
            s.append(_frame(i, 5 + i), 5 + i)
        eq(s.count, 10)
        eq(len(os.listdir(d + "/q")), 3, "4 + 4 + 2 records")
        got = _drain(s, bytearray(64))
        eq(got, [bytes(_frame(i, 5 + i)) for i in range(10)])
        eq(s.count, 0)
        eq(os.listdir(d + "/q"), [], "done segments are deleted")
    finally:
        rmtree(d)


def test_waiting_frames_survive_a_reboot():
    d = tmpdir("st")
    try:
        s = Store(d + "/q", 100, seg_records=4)
        for i in range(7):
            s.append(_frame(i), 10)
        buf = bytearray(64)
        for _ in range(3):
            s.peek(buf)
            s.pop(s.head_idx)
        s2 = Store(d + "/q", 100, seg_records=4)  # a reboot: only the files remain
        eq(s2.count, 4)
        eq(_drain(s2, buf), [bytes(_frame(i)) for i in range(3, 7)])
    finally:
        rmtree(d)


def test_full_queue_drops_oldest_and_counts():
    d = tmpdir("st")
    try:
        s = Store(d + "/q", 8, seg_records=3)
        buf = bytearray(64)
        s.peek(buf)
        for i in range(20):
            s.append(_frame(i), 10)
        eq(s.count, 8)
        eq(s.dropped, 12)
        eq(_drain(s, buf), [bytes(_frame(i)) for i in range(12, 20)])
    finally:
        rmtree(d)


def test_pop_of_a_frame_dropped_while_in_flight_is_refused():
    d = tmpdir("st")
    try:
        s = Store(d + "/q", 8)
        buf = bytearray(64)
        for i in range(8):
            s.append(_frame(i), 10)
        s.peek(buf)
        idx = s.head_idx
        s.append(_frame(99), 10)  # full: frame idx is dropped while the sender waits for its PUBACK
        eq(s.pop(idx), False)
        eq(s.count, 8, "the next frame was not removed in its place")
        s.peek(buf)
        eq(bytes(buf[:10]), bytes(_frame(1)))
    finally:
        rmtree(d)


def test_a_frame_dropped_while_in_flight_and_then_delivered_is_not_counted_dropped():
    d = tmpdir("st")
    try:
        s = Store(d + "/q", 4)
        buf = bytearray(64)
        for i in range(4):
            s.append(_frame(i), 10)
        s.peek(buf)
        idx = s.head_idx
        s.append(_frame(98), 10)  # full: the frame in flight is dropped and counted
        s.append(_frame(99), 10)  # full: frame 1 is dropped, and it is lost
        eq(s.dropped, 2)
        s.delivered(idx)  # its PUBACK came: the broker has it
        eq(s.dropped, 1, "only frame 1 is lost")
        eq(s.count, 4, "nothing else was removed in its place")
        s.peek(buf)
        eq(bytes(buf[:10]), bytes(_frame(2)))
        s.delivered(s.head_idx)  # an ordinary delivery pops the head and counts nothing
        eq((s.count, s.dropped), (3, 1))
    finally:
        rmtree(d)


def test_record_cut_by_power_loss_is_ignored_and_not_appended_after():
    d = tmpdir("st")
    try:
        s = Store(d + "/q", 100, seg_records=10)
        for i in range(3):
            s.append(_frame(i), 10)
        with open(d + "/q/0", "ab") as f:
            f.write(b"\xff\x00\x20abc")  # header says 32 bytes, only 3 made it to flash
        s2 = Store(d + "/q", 100, seg_records=10)
        eq(s2.count, 3)
        s2.append(_frame(7), 10)
        eq(len(os.listdir(d + "/q")), 2, "new frames go to a fresh segment")
        eq(_drain(s2, bytearray(64)), [bytes(_frame(i)) for i in (0, 1, 2, 7)])
    finally:
        rmtree(d)


def test_empty_frame_is_refused():
    d = tmpdir("st")
    try:
        s = Store(d + "/q", 8)
        try:
            s.append(bytearray(4), 0)
        except StoreError:
            return
        raise AssertionError("an empty frame was queued")
    finally:
        rmtree(d)
