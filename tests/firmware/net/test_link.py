"""link.py: topics per node and the capped, jittered backoff."""

from _check import eq
from polylink.net import link


def test_topics_follow_seam_2():
    eq(link.topics("n-7"), ("pl/v1/n-7/up", "pl/v1/n-7/down", "pl/v1/n-7/conn"))


def test_backoff_doubles_then_caps_with_jitter_in_the_upper_half():
    eq([link.backoff_s(a, 1.0) for a in range(9)], [1, 2, 4, 8, 16, 32, 64, 120, 120])
    eq([link.backoff_s(a, 0.0) for a in range(4)], [0.5, 1, 2, 4])
    eq(link.backoff_s(1000, 0.5), 90.0, "a huge attempt count stays capped")
    for a in range(12):
        b = link.backoff_s(a)
        top = min(120, 1 << a)
        if not top / 2 <= b <= top:
            raise AssertionError("attempt %d: %r outside %r..%r" % (a, b, top / 2, top))


def test_random_jitter_spreads_a_fleet():
    vals = set(link.backoff_s(5) for _ in range(20))
    if len(vals) < 10:
        raise AssertionError("jitter too coarse: %r" % sorted(vals))


def test_dropped_client_unloads_mqtt_and_packet_ids_continue():
    import sys

    from polylink.config import Config

    c = Config()
    c.node = "n1"
    lk = link.Link(None, c, lambda *a: None)
    cl = lk._client()
    cl._pid = 41
    lk.client = cl
    lk._drop_client()
    eq((lk.client, lk._pid), (None, 41))
    if sys.implementation.name == "micropython":
        eq("polylink.net.mqtt" in sys.modules, False, "mqtt.py left the heap")
    eq(lk._client()._pid, 41, "the next session goes on from the last packet id")
