"""A small MQTT 3.1.1 client on asyncio streams: protocol only, no reconnect policy (link.py)."""

import asyncio

from micropython import const

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # fixed-header flags 0b0010 are mandatory for SUBSCRIBE
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)
_MAX_IN = const(2048)  # largest incoming PUBLISH kept; downlinks are a few dozen bytes

_REFUSED = (
    "",
    "unacceptable protocol version",
    "client id rejected",
    "server unavailable",
    "bad user name or password",
    "not authorised",
)


class MQTTError(OSError):
    """The broker refused us or broke the MQTT 3.1.1 protocol (an OSError: the link policy
    treats it like any other failed connection, without importing this module)."""


class _NotConnected:
    """Stands in for the streams until connect(): any use is a clear MQTTError."""

    def write(self, b):
        raise MQTTError("not connected")

    async def drain(self):
        raise MQTTError("not connected")

    async def readexactly(self, n) -> bytes:
        raise MQTTError("not connected")

    def close(self):
        pass

    async def wait_closed(self):
        pass


_NOT_CONNECTED = _NotConnected()


def _lstr(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return bytes((len(b) >> 8, len(b) & 0xFF)) + b


class MQTTClient:
    """One MQTT session over a (reader, writer) pair; call read_packet() in a loop to receive."""

    def __init__(self, client_id, keepalive=60, user=None, password=None, will=None, clean=True):
        # will: (topic, message, retain, qos) published by the broker if we vanish.
        self.client_id = client_id
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.will = will
        self.clean = clean
        self.on_message = None  # on_message(topic: str, msg: bytes, retained: bool)
        self.pending = set()  # packet ids of QoS 1 PUBLISH / SUBSCRIBE not yet acknowledged
        self.acked = asyncio.Event()
        self.oversized = 0  # incoming PUBLISH packets dropped for being larger than _MAX_IN
        self.r = _NOT_CONNECTED
        self.w = _NOT_CONNECTED
        self._pid = 0
        self._hdr = bytearray(5)
        self._ack = bytearray(4)

    def next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _header(self, first, remaining):
        h = self._hdr
        h[0] = first
        i = 1
        while True:
            b = remaining & 0x7F
            remaining >>= 7
            if remaining:
                b |= 0x80
            h[i] = b
            i += 1
            if not remaining:
                break
        return memoryview(h)[:i]

    async def connect(self, reader, writer) -> bool:
        """Send CONNECT, wait for CONNACK; return the broker's session-present flag."""
        self.r = reader
        self.w = writer
        flags = 0x02 if self.clean else 0
        payload = _lstr(self.client_id)
        if self.will:
            topic, msg, retain, qos = self.will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _lstr(topic) + _lstr(msg)
        if self.user is not None:
            flags |= 0x80
            payload += _lstr(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _lstr(self.password)
        var = b"\x00\x04MQTT\x04" + bytes((flags, self.keepalive >> 8, self.keepalive & 0xFF))
        writer.write(self._header(_CONNECT, len(var) + len(payload)))
        writer.write(var)
        writer.write(payload)
        await writer.drain()
        resp = await reader.readexactly(4)
        if resp[0] != _CONNACK or resp[1] != 2:
            raise MQTTError("expected CONNACK, got packet 0x%02x" % resp[0])
        rc = resp[3]
        if rc:
            why = _REFUSED[rc] if rc < len(_REFUSED) else "code %d" % rc
            raise MQTTError("broker refused the connection: %s" % why)
        return bool(resp[2] & 1)

    async def publish(self, topic, msg, qos=0, retain=False, pid=0, dup=False) -> int:
        """Send one PUBLISH; for QoS 1 return its packet id (pass pid and dup=True to resend)."""
        if qos not in (0, 1):
            raise MQTTError("QoS %r not supported (0 or 1)" % (qos,))
        t = topic.encode() if isinstance(topic, str) else topic
        first = _PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup and qos else 0)
        w = self.w
        w.write(self._header(first, 2 + len(t) + (2 if qos else 0) + len(msg)))
        w.write(bytes((len(t) >> 8, len(t) & 0xFF)))
        w.write(t)
        if qos:
            if not pid:
                pid = self.next_pid()
            w.write(bytes((pid >> 8, pid & 0xFF)))
            self.pending.add(pid)
        w.write(msg)
        await w.drain()
        return pid

    async def subscribe(self, topic, qos=1) -> int:
        """Send SUBSCRIBE; its SUBACK arrives through read_packet() and clears pending."""
        pid = self.next_pid()
        t = _lstr(topic)
        self.w.write(self._header(_SUBSCRIBE, 2 + len(t) + 1))
        self.w.write(bytes((pid >> 8, pid & 0xFF)) + t + bytes((qos,)))
        self.pending.add(pid)
        await self.w.drain()
        return pid

    async def ping(self):
        self.w.write(self._header(_PINGREQ, 0))
        await self.w.drain()

    async def close(self):
        """Close the socket for real: on MicroPython StreamWriter.close() does nothing, only
        wait_closed() closes (a socket left to the collector stays open; lwIP has a handful)."""
        try:
            self.w.close()
            await self.w.wait_closed()
        except OSError:
            pass

    async def disconnect(self):
        self.w.write(self._header(_DISCONNECT, 0))
        await self.w.drain()

    async def wait_ack(self, pid, timeout_s) -> bool:
        """Wait up to timeout_s for the PUBACK/SUBACK of pid; False on timeout."""
        while pid in self.pending:
            self.acked.clear()
            try:
                await asyncio.wait_for(self.acked.wait(), timeout_s)
            except asyncio.TimeoutError:
                return pid not in self.pending
        return True

    async def _remaining(self):
        n = 0
        shift = 0
        while True:
            b = (await self.r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length")

    async def read_packet(self) -> int:
        """Read and handle one packet from the broker; return its type (high nibble of byte 0)."""
        first = (await self.r.readexactly(1))[0]
        n = await self._remaining()
        kind = first & 0xF0
        if kind == _PUBLISH:
            await self._incoming(first, n)
        elif kind == _PUBACK or kind == _SUBACK:
            if n < 2:
                raise MQTTError("short %s" % ("PUBACK" if kind == _PUBACK else "SUBACK"))
            body = await self.r.readexactly(n)
            pid = (body[0] << 8) | body[1]
            if kind == _SUBACK and body[2:3] == b"\x80":
                raise MQTTError("broker refused subscription %d" % pid)
            self.pending.discard(pid)
            self.acked.set()
        elif kind == _PINGRESP:
            if n:
                await self.r.readexactly(n)
        else:
            raise MQTTError("unexpected packet 0x%02x from broker" % first)
        return kind

    async def _incoming(self, first, n):
        qos = (first >> 1) & 3
        if qos == 2:
            raise MQTTError("broker sent QoS 2 although we subscribed with QoS 1")
        if n > _MAX_IN:
            # Drain it in small pieces so one oversized downlink cannot exhaust the heap.
            head = await self.r.readexactly(2)
            tlen = (head[0] << 8) | head[1]
            left = n - 2
            pid = 0
            skip = tlen
            while skip:
                k = min(skip, 64)
                await self.r.readexactly(k)
                skip -= k
            left -= tlen
            if qos:
                p = await self.r.readexactly(2)
                pid = (p[0] << 8) | p[1]
                left -= 2
            while left:
                k = min(left, 64)
                await self.r.readexactly(k)
                left -= k
            self.oversized += 1
            if qos:
                await self._puback(pid)
            return
        body = await self.r.readexactly(n)
        tlen = (body[0] << 8) | body[1]
        if 2 + tlen + (2 if qos else 0) > n:
            raise MQTTError("PUBLISH topic length %d exceeds the packet" % tlen)
        topic = bytes(body[2 : 2 + tlen]).decode()
        off = 2 + tlen
        pid = 0
        if qos:
            pid = (body[off] << 8) | body[off + 1]
            off += 2
        # Act first, acknowledge after: a downlink that could not be handled (a MemoryError
        # loading commands.py) stays unacknowledged, and the broker delivers it again on the
        # next session (clean=False). A reboot command only schedules the reset, so its PUBACK
        # still leaves before the reboot and it does not come back after it.
        if self.on_message is not None:
            self.on_message(topic, body[off:], bool(first & 1))
        if qos:
            await self._puback(pid)

    async def _puback(self, pid):
        a = self._ack
        a[0] = _PUBACK
        a[1] = 2
        a[2] = pid >> 8
        a[3] = pid & 0xFF
        self.w.write(a)
        await self.w.drain()
