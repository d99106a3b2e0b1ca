"""mqtt.py against an in-memory stream: exact MQTT 3.1.1 bytes out, broker packets in."""

from _check import eq
from _fw import FakeStream
from polylink.net.mqtt import MQTTClient, MQTTError

CONNACK_OK = b"\x20\x02\x00\x00"


async def _connected(**kw):
    s = FakeStream(CONNACK_OK)
    c = MQTTClient("n1", 60, **kw)
    await c.connect(s, s)
    s.take()
    return c, s


async def _expect_error(coro, word):
    try:
        await coro
    except MQTTError as e:
        if word not in str(e):
            raise AssertionError("%r does not mention %r" % (str(e), word)) from None
        return
    raise AssertionError("no MQTTError")


async def test_connect_with_will_and_persistent_session():
    s = FakeStream(b"\x20\x02\x01\x00")
    c = MQTTClient("n1", 60, will=("pl/v1/n1/conn", b"0", True, 1), clean=False)
    present = await c.connect(s, s)
    eq(present, True, "session-present flag")
    want = (
        b"\x10\x20\x00\x04MQTT\x04\x2c\x00\x3c"
        + b"\x00\x02n1"
        + b"\x00\x0dpl/v1/n1/conn"
        + b"\x00\x010"
    )
    eq(s.take(), want)


async def test_connect_with_credentials_and_clean_session():
    s = FakeStream(CONNACK_OK)
    c = MQTTClient("n1", 30, user="u", password="pw")
    eq(await c.connect(s, s), False)
    eq(s.take(), b"\x10\x15\x00\x04MQTT\x04\xc2\x00\x1e\x00\x02n1\x00\x01u\x00\x02pw")


async def test_refused_connection_names_the_reason():
    s = FakeStream(b"\x20\x02\x00\x05")
    await _expect_error(MQTTClient("n1").connect(s, s), "not authorised")
    s = FakeStream(b"\x30\x02\x00\x00")
    await _expect_error(MQTTClient("n1").connect(s, s), "CONNACK")


async def test_qos1_publish_is_pending_until_puback():
    c, s = await _connected()
    pid = await c.publish("pl/v1/n1/up", b"\x21\x00\x07", qos=1)
    eq(pid, 1)
    eq(s.take(), b"\x32\x12\x00\x0bpl/v1/n1/up\x00\x01\x21\x00\x07")
    eq(pid in c.pending, True)
    s.feed(b"\x40\x02\x00\x01")
    eq(await c.read_packet(), 0x40)
    eq(pid in c.pending, False)
    eq(await c.wait_ack(pid, 0.01), True)


async def test_resend_sets_dup_and_keeps_the_pid():
    c, s = await _connected()
    pid = await c.publish("t", b"x", qos=1)
    s.take()
    await c.publish("t", b"x", 1, False, pid, True)
    eq(s.take(), b"\x3a\x06\x00\x01t\x00\x01x")


async def test_retained_qos0_and_long_remaining_length():
    c, s = await _connected()
    await c.publish("t", b"1", retain=True)
    eq(s.take(), b"\x31\x04\x00\x01t1")
    await c.publish("t", bytes(200))
    out = s.take()
    eq(out[:3], b"\x30\xcb\x01", "203 = 0xcb 0x01 as a varint")
    eq(len(out), 3 + 203)


async def test_wait_ack_times_out():
    c, s = await _connected()
    pid = await c.publish("t", b"x", qos=1)
    eq(await c.wait_ack(pid, 0.01), False)


async def test_subscribe_and_suback():
    c, s = await _connected()
    pid = await c.subscribe("pl/v1/n1/down", 1)
    eq(s.take(), b"\x82\x12\x00\x01\x00\x0dpl/v1/n1/down\x01")
    s.feed(b"\x90\x03\x00\x01\x01")
    eq(await c.read_packet(), 0x90)
    eq(pid in c.pending, False)
    await c.subscribe("x", 1)
    s.feed(b"\x90\x03\x00\x02\x80")
    await _expect_error(c.read_packet(), "refused")


async def test_incoming_qos1_publish_is_acked_after_the_callback():
    c, s = await _connected()
    seen = []

    def on_message(topic, msg, retained):
        seen.append((topic, bytes(msg), retained, s.take()))

    c.on_message = on_message
    s.feed(b"\x32\x0a\x00\x04down\x12\x34hi")
    await c.read_packet()
    eq(seen, [("down", b"hi", False, b"")], "nothing acknowledged while handling")
    eq(s.take(), b"\x40\x02\x12\x34")


async def test_a_downlink_whose_handling_fails_is_not_acknowledged():
    c, s = await _connected()

    def on_message(topic, msg, retained):
        raise MemoryError("memory allocation failed")  # loading commands.py on a full heap

    c.on_message = on_message
    s.feed(b"\x32\x0a\x00\x04down\x12\x34hi")
    try:
        await c.read_packet()
        raise AssertionError("the handler's MemoryError was swallowed")
    except MemoryError:
        pass
    eq(s.take(), b"", "no PUBACK: the broker delivers it again on the next session")


async def test_oversized_publish_is_skipped_but_acked():
    c, s = await _connected()
    seen = []
    c.on_message = lambda t, m, r: seen.append(t)
    n = 2 + 1 + 2 + 3000
    s.feed(b"\x32" + bytes((0x80 | (n & 0x7F), n >> 7)) + b"\x00\x01t\x00\x09" + bytes(3000))
    s.feed(b"\xd0\x00")
    await c.read_packet()
    eq((seen, c.oversized, s.take()), ([], 1, b"\x40\x02\x00\x09"))
    eq(await c.read_packet(), 0xD0, "the stream is still in step")


async def test_protocol_violations_raise_mqtt_error():
    c, s = await _connected()
    s.feed(b"\x70\x00")
    await _expect_error(c.read_packet(), "unexpected packet")
    c, s = await _connected()
    s.feed(b"\x30\xff\xff\xff\xff\x01")
    await _expect_error(c.read_packet(), "remaining length")
    c, s = await _connected()
    s.feed(b"\x34\x02\x00\x00")
    await _expect_error(c.read_packet(), "QoS 2")
    c, s = await _connected()
    s.feed(b"\x30\x03\x00\x09t")
    await _expect_error(c.read_packet(), "topic length")


async def test_qos2_publish_is_refused():
    c, s = await _connected()
    await _expect_error(c.publish("t", b"x", qos=2), "QoS")
