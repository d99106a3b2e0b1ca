"""link.py over an in-memory broker connection: session setup, DUP resends, keepalive, reconnect."""

import asyncio

from _check import eq
from _fw import NetHAL, board
from polylink.config import Config
from polylink.net import link


async def _until(cond, what, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def _cfg():
    c = Config()
    c.node = "n1"
    c.mqtt_host = "broker"
    c.keepalive = 1
    return c


async def _handshake(hal, i, present):
    """Play the broker for session i: CONNACK, SUBACK, PUBACK of the retained conn '1'."""
    await _until(lambda: len(hal.pipes) > i and hal.pipes[i].tx, "CONNECT %d" % i)
    p = hal.pipes[i]
    eq(p.take()[0], 0x10, "CONNECT")
    p.feed(b"\x20\x02" + (b"\x01" if present else b"\x00") + b"\x00")
    await _until(lambda: b"pl/v1/n1/conn" in p.tx, "SUBSCRIBE and conn publish")
    sent = p.take()
    eq(sent[0], 0x82, "SUBSCRIBE first")
    eq(b"\x31" in sent, True, "conn '1' is retained QoS 1")
    return p


async def test_dup_resend_keepalive_and_resend_after_reconnect():
    saved = link._ACK_TIMEOUT_S
    link._ACK_TIMEOUT_S = 0.1
    hal = NetHAL("/", board())
    lk = link.Link(hal, _cfg(), lambda t, m, r: None)
    task = asyncio.create_task(lk.run())
    try:
        p = await _handshake(hal, 0, False)
        await _until(lk.up.is_set, "up")
        pub = asyncio.create_task(lk.publish(lk.up_topic, b"\x21\x00\x05", key=7))
        await _until(lambda: p.tx.count(b"pl/v1/n1/up") >= 2, "a resend")
        first, dup = p.tx[: len(p.tx) // 2], p.tx[len(p.tx) // 2 :]
        eq(first[0], 0x32, "QoS 1 PUBLISH")
        eq(dup[0], 0x3A, "resent with DUP")
        eq(first[1:], dup[1:], "same packet id and payload")
        pid = first[-5:-3]
        p.take()
        p.feed(b"\x40\x02" + pid)
        await pub
        eq(lk._inflight, None)

        # Keepalive: PINGREQ every keepalive/2; a silent broker is dropped after 1.5 keepalives.
        await _until(lambda: b"\xc0\x00" in p.tx, "PINGREQ", 2)
        p.take()
        await _until(lambda: p.closed, "the silent session closed", 4)
        eq("keepalive" in lk.last_error, True, lk.last_error)
        eq(lk.failures, 1)

        # A publish cut off by a dead connection is resent with its pid and DUP into a kept session.
        p = await _handshake(hal, 1, True)
        await _until(lk.up.is_set, "up again")
        pub = asyncio.create_task(lk.publish(lk.up_topic, b"\x21\x00\x06", key=8))
        await _until(lambda: b"pl/v1/n1/up" in p.tx, "publish")
        pid = p.tx[-5:-3]
        p.cut()
        try:
            await pub
            raise AssertionError("publish returned although never acknowledged")
        except link.LinkDown:
            pass
        p = await _handshake(hal, 2, True)
        pub = asyncio.create_task(lk.publish(lk.up_topic, b"\x21\x00\x06", key=8))
        await _until(lambda: b"pl/v1/n1/up" in p.tx, "resend after reconnect")
        eq(p.tx[0], 0x3A, "DUP set")
        eq(p.tx[-5:-3], pid, "original packet id")
        p.feed(b"\x40\x02" + pid)
        await pub
        eq(lk.connects, 3)
    finally:
        link._ACK_TIMEOUT_S = saved
        task.cancel()
        await asyncio.sleep(0)


async def test_refused_connect_closes_its_socket_and_backs_off():
    hal = NetHAL("/", board())
    lk = link.Link(hal, _cfg(), lambda t, m, r: None)
    task = asyncio.create_task(lk.run())
    try:
        await _until(lambda: hal.pipes and hal.pipes[0].tx, "CONNECT")
        hal.pipes[0].feed(b"\x20\x02\x00\x04")  # bad user name or password
        await _until(lambda: lk.failures == 1, "the failure counted")
        eq(hal.pipes[0].closed, True, "socket closed")
        eq("bad user name or password" in lk.last_error, True, lk.last_error)
        eq(lk.up.is_set(), False)
        await asyncio.sleep(0.2)
        eq(len(hal.pipes), 1, "no reconnect before the backoff (at least 0.5 s)")
    finally:
        task.cancel()
        await asyncio.sleep(0)
