"""Connectivity policy above mqtt.py: WiFi, MQTT session, capped backoff, up/down events.

mqtt.py is imported when a session is opened; with drop_idle (a wifi_first node on LoRaWAN) it
is dropped from the heap again while WiFi is down. Its MQTTError is an OSError, caught as one.
"""

import asyncio
import random

from polylink import config

_BACKOFF_FIRST_S = 1
_BACKOFF_CAP_S = 120
_WIFI_TIMEOUT_S = 20
_CONNECT_TIMEOUT_S = 15
_ACK_TIMEOUT_S = 10
_RESENDS = 2  # DUP resends of an unacknowledged PUBLISH before the connection is declared dead


class LinkDown(OSError):
    """The connection dropped before the broker acknowledged a publish; retry once up is set."""


def topics(node):
    """(up, down, conn) topics of a node (docs/architecture.md, MQTT topics)."""
    base = "pl/v1/" + node
    return base + "/up", base + "/down", base + "/conn"


def backoff_s(attempt, rand=None) -> float:
    """Capped exponential backoff, 'equal jitter' (half fixed, half random) to spread a fleet."""
    top = _BACKOFF_FIRST_S << min(attempt, 10)
    if top > _BACKOFF_CAP_S:
        top = _BACKOFF_CAP_S
    r = random.getrandbits(16) / 65536 if rand is None else rand
    return top / 2 + top / 2 * r


class Link:
    """Keeps one MQTT session alive for a node; waiters use up/down instead of handling errors."""

    def __init__(self, hal, cfg, on_message):
        self.hal = hal
        self.cfg = cfg
        self.on_message = on_message
        self.up_topic, self.down_topic, self.conn_topic = topics(cfg.node)
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.down.set()
        self.client = None
        self.drop_idle = False  # unload the MQTT client while WiFi is down (node.py sets it)
        self._pid = 0  # the last packet id, kept while the client is unloaded
        self.connects = 0  # successful sessions since boot
        self.failures = 0  # failed or dropped sessions since boot
        self.last_error = ""
        self._dead = asyncio.Event()
        self._session = False  # the broker kept our session: unacknowledged pids must be resent
        self._inflight = None  # (pid, key) of the publish waiting for its PUBACK
        self._last_rx = 0
        self._closed = False  # close() was called: the node goes to sleep, no new session
        # hold(): another TLS socket (an OTA download over HTTPS) needs the RAM; no session
        # until release(). An ESP32 holds one TLS session at a time (docs/operations.md).
        self._held = False
        self._released = asyncio.Event()

    def _client(self):
        # Device RAM: the MQTT code leaves the heap while WiFi is down (_drop_client)
        from polylink.net.mqtt import MQTTClient

        c = self.cfg
        cl = MQTTClient(
            c.node,
            c.keepalive,
            c.mqtt_user,
            c.mqtt_password,
            will=(self.conn_topic, b"0", True, 1),
            clean=False,
        )
        cl.on_message = self.on_message
        # Packet ids continue across sessions: a kept session may still hold the in-flight one.
        cl._pid = self.client._pid if self.client is not None else self._pid
        return cl

    def _drop_client(self):
        """WiFi is down: let the MQTT code go until the next session (drop_idle)."""
        if self.client is not None:
            self._pid = self.client._pid
            self.client = None
        config.unload("net.mqtt")

    async def _wifi(self):
        hal = self.hal
        if hal.wifi_isconnected():
            return
        hal.wifi_connect(self.cfg.wifi_ssid, self.cfg.wifi_password)
        for _ in range(_WIFI_TIMEOUT_S * 4):
            if hal.wifi_isconnected():
                return
            await asyncio.sleep(0.25)
        raise OSError("WiFi %r did not come up within %d s" % (self.cfg.wifi_ssid, _WIFI_TIMEOUT_S))

    async def _session_open(self):
        c = self.cfg
        r, w = await asyncio.wait_for(
            self.hal.open_connection(c.mqtt_host, c.mqtt_port, c.mqtt_tls), _CONNECT_TIMEOUT_S
        )
        cl = self._client()
        self.client = cl
        self._last_rx = self.hal.ticks_ms()
        try:
            self._session = await asyncio.wait_for(cl.connect(r, w), _CONNECT_TIMEOUT_S)
        except ValueError as e:
            # MicroPython's ssl refuses the broker's certificate with a ValueError at the
            # handshake (CONNECT is the first write): a refused connection, retried and logged
            # like any other, not an error that kills the link task and resets the node.
            raise OSError("TLS: %s" % str(e).strip()) from None
        self._dead.clear()
        return cl

    async def _reader(self, cl):
        try:
            while True:
                await cl.read_packet()
                self._last_rx = self.hal.ticks_ms()
        except Exception as e:  # noqa: BLE001 - whatever ends the reader ends the session
            # A MemoryError handling a downlink too: the session is dropped before its PUBACK,
            # so the broker delivers the downlink again, and the link reconnects.
            self.last_error = "read: %s: %s" % (type(e).__name__, e)
        finally:
            self._dead.set()
            cl.acked.set()  # wake publishers so they see the session is gone

    async def _serve(self, cl):
        """Run the reader and keep the session alive with PINGREQ until it dies."""
        reader = asyncio.create_task(self._reader(cl))
        period = self.cfg.keepalive / 2
        try:
            while not self._dead.is_set():
                try:
                    await asyncio.wait_for(self._dead.wait(), period)
                    break
                except asyncio.TimeoutError:
                    pass
                if (
                    self.hal.ticks_diff(self.hal.ticks_ms(), self._last_rx)
                    > self.cfg.keepalive * 1500
                ):
                    self.last_error = "no packet from the broker for 1.5 keepalive periods"
                    break
                await cl.ping()
        except OSError as e:
            self.last_error = "ping: %s" % (e,)
        finally:
            reader.cancel()
            self._dead.set()

    async def run(self):
        """Forever: bring WiFi and MQTT up, serve the session, back off after each failure."""
        attempt = 0
        cl = None
        while True:
            if self._held:
                await self._released.wait()
                attempt = 0
            try:
                await self._wifi()
                cl = await self._session_open()
                if self._held:  # hold() came while connecting: give the socket back at once
                    raise OSError("held")
                await cl.subscribe(self.down_topic, 1)
                await cl.publish(self.conn_topic, b"1", qos=1, retain=True)
                self.connects += 1
                attempt = 0
                self.down.clear()
                self.up.set()
                await self._serve(cl)
            except (OSError, EOFError, asyncio.TimeoutError) as e:
                err = "%s: %s" % (type(e).__name__, e)
                if err != self.last_error and not self._held:
                    # Once per new reason, not per retry: a refused certificate (wrong CA,
                    # expired, another name) says why here, and the log does not fill up.
                    print("polylink: mqtt %s:%d: %s" % (self.cfg.mqtt_host, self.cfg.mqtt_port,
                                                        err))
                self.last_error = err
            finally:
                self.up.clear()
                self.down.set()
                self._dead.set()
                # self.client, not cl: a CONNECT that failed must not leave its socket open.
                if self.client is not None:
                    self.client.acked.set()
                    await self.client.close()
                if self.drop_idle and not self.hal.wifi_isconnected():
                    cl = None  # this frame would keep the client, and with it mqtt.py
                    self._drop_client()
            if self._closed:
                return
            if self._held:
                continue  # no failure and no backoff: the session was given up on purpose
            self.failures += 1
            await asyncio.sleep(backoff_s(attempt))
            attempt += 1

    async def close(self):
        """End the session with DISCONNECT before a deep sleep: the broker keeps the session
        (clean=False) and queues downlinks for the next wake, and publishes no will."""
        self._closed = True
        cl = self.client
        if cl is None or self._dead.is_set():
            return
        try:
            await cl.disconnect()
        except OSError:
            pass
        self._dead.set()
        await cl.close()

    async def hold(self):
        """End the session (DISCONNECT: the broker keeps it and queues downlinks) and open none
        until release(), so the node never holds two TLS sockets at once."""
        if self._held:
            return
        self._held = True
        self._released.clear()
        cl = self.client
        if cl is None or self._dead.is_set():
            return
        try:
            await cl.disconnect()
        except OSError:
            pass
        self._dead.set()
        await cl.close()

    def release(self):
        """Let run() open a session again after hold()."""
        if self._held:
            self._held = False
            self._released.set()

    async def publish(self, topic, msg, retain=False, key=None):
        """Publish at QoS 1, return once acknowledged; raise LinkDown if the session died.

        key names the message (the store's record index) so a retry of the same message after a
        reconnect is recognised and resent as a duplicate.
        """
        await self.up.wait()
        cl = self.client
        if cl is None or self._dead.is_set():
            raise LinkDown("no session")
        inf = self._inflight
        try:
            if inf is not None and key is not None and inf[1] == key and self._session:
                # The broker kept our session: MQTT 3.1.1 4.4 wants the same pid, DUP set.
                pid = await cl.publish(topic, msg, 1, retain, inf[0], True)
            else:
                pid = await cl.publish(topic, msg, 1, retain)
            self._inflight = (pid, key)
            for _ in range(_RESENDS + 1):
                if await cl.wait_ack(pid, _ACK_TIMEOUT_S):
                    self._inflight = None
                    return
                if self._dead.is_set():
                    break
                await cl.publish(topic, msg, 1, retain, pid, True)
        except OSError as e:
            self.last_error = "publish: %s" % (e,)
        self._dead.set()
        raise LinkDown("publish of %d bytes to %s not acknowledged" % (len(msg), topic))
