"""sequence.py: numbers never repeat across reboots; flash is written once per block."""

from _check import eq
from _fw import rmtree, tmpdir
from polylink.sequence import Sequence


def test_reboot_skips_to_the_next_reserved_block():
    d = tmpdir("seq")
    try:
        s = Sequence(d + "/seq", block=10)
        eq([s.take() for _ in range(3)], [0, 1, 2])
        eq(s.boots, 1)
        s2 = Sequence(d + "/seq", block=10)  # reboot after using 3 numbers of block 0..9
        eq(s2.take(), 10)
        eq(s2.boots, 2)
        for _ in range(15):
            last = s2.take()
        eq(last, 25)
        s3 = Sequence(d + "/seq", block=10)
        eq(s3.take(), 30, "block 20..29 was reserved while counting to 25")
    finally:
        rmtree(d)


def test_flash_written_once_per_block():
    d = tmpdir("seq")
    try:
        s = Sequence(d + "/seq", block=100)
        writes = [0]
        save = s._save

        def counting():
            writes[0] += 1
            save()

        s._save = counting
        for _ in range(250):
            s.take()
        eq(writes[0], 2)
    finally:
        rmtree(d)


def test_wire_value_wraps_at_16_bits():
    d = tmpdir("seq")
    try:
        with open(d + "/seq", "w") as f:
            f.write("65535 4\n")
        s = Sequence(d + "/seq")
        eq((s.take(), s.take()), (65535, 0))
    finally:
        rmtree(d)


def test_unreadable_file_starts_over_and_counts_a_boot():
    d = tmpdir("seq")
    try:
        with open(d + "/seq", "w") as f:
            f.write("garbage")
        s = Sequence(d + "/seq")
        eq((s.take(), s.boots), (0, 1))
    finally:
        rmtree(d)


def test_deep_sleep_continues_without_a_gap_and_is_not_a_boot():
    # power.py closes the sequence before each deep sleep; the wake takes the very next number.
    d = tmpdir("seq")
    try:
        s = Sequence(d + "/seq", block=10)
        got = [s.take() for _ in range(3)]
        for _wake in range(4):
            s.close()
            s = Sequence(d + "/seq", block=10, wake=True)
            got += [s.take() for _ in range(4)]
        eq(got, list(range(19)), "every seq once, in order, across four sleeps")
        eq(s.boots, 1, "wakes from deep sleep are not boots")
        s3 = Sequence(d + "/seq", block=10)  # a reset without close(): skips to the limit
        eq(s3.take(), 25, "the last wake reserved 15..24")
        eq(s3.boots, 2)
    finally:
        rmtree(d)
