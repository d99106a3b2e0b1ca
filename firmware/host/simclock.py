"""The simulated node's clock, in the MicroPython subset: both host ports take their time here.

MicroPython's ticks wrap at 2**30 ms (12.4 days); on CPython the ticks wrap the same way so the
firmware's wrap handling runs there too. Wall time is an int on every port: the Unix port's
time.time() is a float (an ESP32's is an int), and the frame codec refuses a float timestamp.
"""

import time

TICKS_PERIOD = 1 << 30
_TICKS_MASK = TICKS_PERIOD - 1
_TICKS_HALF = TICKS_PERIOD // 2


def ticks_ms() -> int:
    t = getattr(time, "ticks_ms", None)  # MicroPython's own, same period
    if t is not None:
        return t()
    return int(time.monotonic() * 1000) & _TICKS_MASK


def ticks_diff(a: int, b: int) -> int:
    return ((a - b + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF


def ticks_add(a: int, delta: int) -> int:
    return (a + delta) & _TICKS_MASK


def unix_time() -> int:
    """Seconds since 1970 as an int (the Unix port, like CPython, counts from 1970)."""
    return int(time.time())
