"""The one place the fleet makes paho MQTT clients: protocol, login, TLS, and a publish helper.

Every client the fleet opens (ingest worker, provider workers, downlinks, OTA offers, claims)
comes from client(), so the paho API version and the login and TLS set-up are written once.
"""

import ssl
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MQTTv311, MQTTv5 = paho.MQTTv311, paho.MQTTv5
PUBLISH_TIMEOUT = 5.0


class Unreachable(OSError):
    """The broker could not be reached; the text is the socket's own error."""


class NotAcknowledged(OSError):
    """The broker did not acknowledge a QoS 1 message in time."""


def client(client_id: str = "", user: str | None = None, password: str | None = None,
           tls: bool = False, protocol: int = MQTTv311, cls=paho.Client, **options) -> paho.Client:
    """A paho client (callback API 2) logged in as user when one is given, over TLS if asked.

    options go to paho as they are (clean_session, manual_ack); cls is a paho.Client subclass.
    """
    c = cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **options)
    if user:
        c.username_pw_set(user, password)
    if tls:
        c.tls_set_context(ssl.create_default_context())
    return c


def connect_properties(session_expiry: int, receive_maximum: int) -> Properties:
    """MQTT 5 CONNECT properties: how long the broker keeps the session, how much it may send."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry
    props.ReceiveMaximum = receive_maximum
    return props


class BufferedClient(paho.Client):
    """paho reads each packet with three or more recv() calls; serve them from one large read."""

    _rbuf = b""
    _rpos = 0
    _rsock = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:
            # A new connection: bytes left over from the old socket belong to a dead session.
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        pos = self._rpos
        if pos >= len(self._rbuf):
            self._rbuf = super()._sock_recv(262144)  # raises BlockingIOError when nothing waits
            pos = 0
            if not self._rbuf:
                return b""  # connection closed
        chunk = self._rbuf[pos:pos + bufsize]
        self._rpos = pos + len(chunk)
        return chunk

    read_budget = 1000  # most packets one loop_read() handles, so batches can close on time

    # Set by the worker: on_frame(topic bytes, payload bytes, mid, qos, retain) for each PUBLISH.
    on_frame = None

    def _handle_publish(self):
        # paho builds an MQTTMessage and matches topic callbacks for every PUBLISH, which costs
        # more than decoding and storing the frame; for MQTT 3.1.1 QoS 0/1 (no properties) take
        # topic, mid and payload straight from the packet. Written against paho-mqtt 2.2.0 (pinned).
        header = self._in_packet["command"]
        qos = (header >> 1) & 3
        if self.on_frame is None or self._protocol == MQTTv5 or qos == 2:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        if not self._hand_over(packet, 0, len(packet), header):
            return paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _hand_over(self, buf, start: int, end: int, header: int) -> bool:
        """Give on_frame the PUBLISH whose variable header and payload are buf[start:end]
        (topic, payload, packet id, QoS, retain); False if malformed: its topic or packet id runs
        past its end. Both read paths (_handle_publish, _read_publishes) come here."""
        qos = (header >> 1) & 3
        if end - start < 2:
            return False
        topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
        if topic_end + 2 * qos > end:
            return False
        if qos:
            self.on_frame(buf[start + 2:topic_end], buf[topic_end + 2:end],
                          buf[topic_end] << 8 | buf[topic_end + 1], qos, header & 1)
        else:
            self.on_frame(buf[start + 2:topic_end], buf[topic_end:end], 0, 0, header & 1)
        return True

    def loop(self, timeout: float = 1.0):
        # select() cannot see bytes already in our buffer: handle those first, without waiting.
        if self._sock is not None and self._rsock is self._sock and self._rpos < len(self._rbuf):
            rc = self.loop_read()
            if not rc and self.want_write():
                rc = self.loop_write()
            return rc or self.loop_misc()
        return super().loop(timeout)

    _budget = 0  # packets the current loop_read() may still handle

    def loop_read(self, max_packets: int = 1):
        # paho handles one QoS-1 packet per select(); go on while the buffer holds more.
        self._budget = self.read_budget
        rc = super().loop_read(max_packets)
        while (not rc and self._budget > 0 and self._sock is not None
               and self._rpos < len(self._rbuf)):
            rc = super().loop_read(max_packets)
        return rc

    def _packet_read(self):
        # Whole PUBLISH packets waiting in the buffer go straight to on_frame; anything else (a
        # packet cut by the end of the buffer, another packet type, MQTT 5, QoS 2, a malformed
        # packet) takes paho's own path, which reads it through _sock_recv from the same buffer.
        if (self.on_frame is not None and self._protocol != MQTTv5 and self._rsock is self._sock
                and self._in_packet["command"] == 0):
            handled = self._read_publishes(max(self._budget, 1))
            if handled:
                self._budget -= handled
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        self._budget -= 1
        return super()._packet_read()

    def _read_publishes(self, limit: int) -> int:
        """Hand up to limit whole QoS 0/1 PUBLISH packets at the buffer's head to on_frame, as
        _handle_publish does; return how many. paho's per-packet state machine (three recv()
        calls, a dict reset, a lock) cost more than the rest of its work for a small frame."""
        buf, pos = self._rbuf, self._rpos
        size = len(buf)
        count = 0
        while count < limit and pos < size:
            header = buf[pos]
            qos = (header >> 1) & 3
            if header & 0xF0 != 0x30 or qos == 2:
                break
            # Remaining Length: 1-4 bytes of 7 bits, least significant first (MQTT 3.1.1 2.2.3)
            start, length, shift = pos + 1, 0, 0
            while start < size and shift < 28:
                byte = buf[start]
                start += 1
                length |= (byte & 127) << shift
                shift += 7
                if not byte & 128:
                    break
            else:
                break  # cut by the buffer's end, or longer than 4 bytes: paho decides
            end = start + length
            if end > size or not self._hand_over(buf, start, end, header):
                break  # cut by the buffer's end, or malformed: paho's path reports it
            pos = end
            count += 1
        if count:
            self._rpos = pos
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
        return count

    def send_pubacks(self, pubacks: bytes) -> None:
        """Queue PUBACK packets already packed back to back: one write for a whole batch."""
        self._packet_queue(0x40, pubacks, 0, 0)



def publish_acked(c: paho.Client, topic: str, payload: bytes,
                  timeout: float = PUBLISH_TIMEOUT) -> None:
    """Publish with QoS 1 on a connected client and wait for the broker's acknowledgement."""
    info = c.publish(topic, payload, qos=1)
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError) as e:
        # paho's way to say the connection went (refused or dropped) or its queue is full
        raise NotAcknowledged(str(e)) from None
    if not info.is_published():
        raise NotAcknowledged(f"no acknowledgement within {timeout:g} s")


def publish_once(host: str, port: int, topic: str, payload: bytes, user: str | None = None,
                 password: str | None = None, tls: bool = False,
                 timeout: float = PUBLISH_TIMEOUT) -> None:
    """Connect, publish one message with QoS 1, wait until the broker has it, disconnect.

    Raises Unreachable when the connection fails and NotAcknowledged when the broker is silent.
    """
    c = client(user=user, password=password, tls=tls)
    try:
        c.connect(host, port, keepalive=10)
    except OSError as e:
        raise Unreachable(e) from None
    c.loop_start()
    try:
        publish_acked(c, topic, payload, timeout)
    finally:
        c.disconnect()
        c.loop_stop()
