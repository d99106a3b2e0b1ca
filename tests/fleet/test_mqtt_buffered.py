"""fleet.mqtt.BufferedClient reads PUBLISH packets from its own buffer: the same frames, whatever
way the socket cuts the stream, and paho's own errors for a malformed packet.

The bytes come through a real socket pair, in pieces of 1 byte, of odd sizes, or all at once.
"""

import random
import socket
import struct

import paho.mqtt.client as paho
import pytest

from fleet import mqtt


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 127, n >> 7
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, mid: int = 0, qos: int = 1, retain: int = 0) -> bytes:
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body += payload
    return bytes((0x30 | qos << 1 | retain,)) + remaining_length(len(body)) + body


# (topic, payload, mid, qos, retain) as on_frame should see them, and the packets carrying them
FRAMES = [
    (b"pl/v1/n-1/up", b"\x20\x00\x01\x01", 1, 1, 0),
    (b"pl/v1/n-2/conn", b"1", 0, 0, 1),  # QoS 0, retained: no packet id
    (b"pl/v1/n-3/up", bytes(range(200)), 65535, 1, 0),  # two bytes of Remaining Length
    (b"pl/v1/caf\xc3\xa9/up", b"", 7, 1, 0),  # an empty payload; a UTF-8 topic
    (b"pl/v1/n-4/up", bytes(20000), 9, 1, 0),  # three bytes of Remaining Length
]
PINGRESP = b"\xd0\x00"


def stream() -> bytes:
    packets = [publish(*f) for f in FRAMES]
    packets.insert(2, PINGRESP)  # another packet type between PUBLISHes goes through paho
    return b"".join(packets)


def client_on(sock) -> tuple[mqtt.BufferedClient, list]:
    c = mqtt.client("t", cls=mqtt.BufferedClient, manual_ack=True, clean_session=False)
    got = []
    c.on_frame = lambda topic, payload, mid, qos, retain: got.append(
        (bytes(topic), bytes(payload), mid, qos, retain))
    c._sock = sock
    return c, got


def feed(data: bytes, sizes) -> tuple[list, list]:
    """Send data in pieces of the given sizes, reading after each; (frames, loop_read codes)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c, got = client_on(ours)
    codes = []
    try:
        pos = 0
        for size in sizes:
            theirs.sendall(data[pos:pos + size])
            pos += size
            codes.append(c.loop_read())
            while c._rpos < len(c._rbuf) and not codes[-1]:
                codes.append(c.loop_read())
        assert pos >= len(data)
    finally:
        c._sock = None
        ours.close()
        theirs.close()
    return got, codes


@pytest.mark.parametrize("cut", ["whole", "bytes", "odd"])
def test_the_same_frames_however_the_stream_is_cut(cut):
    data = stream()
    sizes = {"whole": [len(data)], "bytes": [1] * len(data),
             "odd": [random.Random(5).randint(1, 40) for _ in range(len(data))]}[cut]
    got, codes = feed(data, sizes)
    assert got == FRAMES
    assert set(codes) == {paho.MQTTErrorCode.MQTT_ERR_SUCCESS}


def test_a_read_stops_at_its_budget_and_the_next_one_goes_on():
    data = b"".join(publish(b"pl/v1/n/up", bytes((i,)), i + 1) for i in range(10))
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c, got = client_on(ours)
    c.read_budget = 4
    try:
        theirs.sendall(data)
        c.loop_read()
        assert len(got) == 4, "a batch can close between reads"
        c.loop_read()
        c.loop_read()
        assert [f[2] for f in got] == list(range(1, 11))
    finally:
        c._sock = None
        ours.close()
        theirs.close()


@pytest.mark.parametrize("bad", [
    # the topic's length runs past the packet's end
    b"\x32\x06\x00\x09pl/v",
    # a Remaining Length of five bytes (at most four: MQTT 3.1.1 2.2.3)
    b"\x32\xff\xff\xff\xff\x01",
])
def test_a_malformed_publish_is_a_protocol_error_after_the_good_frames_before_it(bad):
    good = publish(*FRAMES[0])
    for sizes in ([len(good) + len(bad)], [1] * (len(good) + len(bad))):
        got, codes = feed(good + bad, sizes)
        assert got == FRAMES[:1]
        assert codes[-1] == paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
