"""The ingest worker: broker -> decode -> store; a message is acked only once it is stored.

Any number of workers may run (on one machine or several) on a shared subscription
(`fleet ingest --share GROUP`): the broker hands each message to one of them. Exactly-once is the
database's job, not a worker's: the frames table's key (node, direction, seq) takes a frame once
whichever worker stores it, and a worker killed before its commit leaves its messages unacked for
the broker to deliver again. What a worker keeps in memory (the last seq and boot of each node,
to extend 16-bit seqs and see restarted counters) is refreshed from the store every few seconds.
"""

import logging
import struct
import time

from polylink import proto

from fleet import mqtt, topics
from fleet.senml import intake
from fleet.senml.records import SenmlError
from fleet.stopping import Stopping
from fleet.store import nodes as node_store
from fleet.store import profiles as profile_store
from fleet.store import telemetry as telemetry_store
from fleet.store import upkeep as upkeep_store
from fleet.store.base import describe, valid_node_id
from fleet.store.migrate import open_db

log = logging.getLogger("fleet.ingest")

CLIENT_ID = "polylink-ingest"
SUBSCRIPTIONS = topics.UPLINKS
PROVIDER = "mqtt"  # the fleet's own broker (WiFi nodes); LoRaWAN providers get their own adapters
UPLINK_TYPES = frozenset(proto.UPLINKS)
BAD_PAYLOAD_KEPT = 64  # bytes of a bad frame's payload kept; its size is stored too
# How many messages the broker may send before we acknowledge: a whole batch must fit in it,
# or the worker would wait for messages the broker holds back until we ack. (MQTT 3.1.1 has no
# such field: there mosquitto's max_inflight_messages bounds it.)
RECEIVE_MAXIMUM = 65535
# The broker keeps the session (subscriptions and queued QoS-1 messages) this long while the
# worker is away; "never expire" because losing the queue would lose readings.
SESSION_EXPIRY = 0xFFFFFFFF
_PUBACK = struct.Struct("!BBH")
# A STATUS whose seq was already used tells of a restarted counter when the boot it reports
# (its time minus its uptime) is this much later than the node's last known boot; a redelivered
# STATUS without a timestamp would need to be this late to be taken for one.
BOOT_SLACK = 300
EV_SEQ_RESTART = 3  # EVENT code the fleet records for a restarted counter (docs/protocol.md)
# s between refreshes of a shared worker's node state from the store: a 16-bit seq is extended
# right as long as the worker's last seq of the node is within 32768 frames of the truth.
REFRESH_EVERY = 5.0


class IngestError(Exception):
    """The ingest worker cannot reach its broker or its store."""


class Ingest:
    """Turns broker messages into stored frames; the part of the worker that needs no network."""

    def __init__(self, db, provider=PROVIDER, refresh_every: float | None = None):
        self.db = db
        self.provider = provider
        self.known = node_store.known_node_ids(db)
        self.seqs = node_store.up_seqs(db)
        self.boots = node_store.boot_times(db)
        # None: this worker is the only writer of its nodes, so its memory is the truth.
        self.refresh_every = refresh_every
        self.refreshed = time.monotonic()
        self.batch = telemetry_store.Batch()
        self.pending = 0
        self.stored = 0
        self.duplicates = 0
        self.bad = 0
        self.restarts = 0
        self.senml: list[tuple] = []  # store rows of SenML packs (pl/v1/{node}/senml)
        self.senml_fields = intake.Mappings(db)

    def add(self, topic: str, payload: bytes, received_at: float, retained=False):
        """Decode one message into the current batch; bad frames are kept, never raised."""
        batch = self.batch
        self.pending += 1
        if topics.is_data(topic):
            return  # the exports' own SenML for node "up" or "conn", not a node's frame
        parts = topics.node_topic(topic)
        if parts is None:
            self._bad(None, received_at, topic, payload, "topic is not pl/v1/{node}/up|conn")
            return
        node, kind = parts
        if node not in self.known:
            if not valid_node_id(node):
                self._bad(None, received_at, topic, payload, "node id is not [a-z0-9-]{1,32}")
                return
            # Auto-enrol on first contact: only clients the broker let in can publish here.
            self.known.add(node)
            batch.new_nodes.append((node, self.provider, received_at))
        if kind == "up":
            try:
                mtype, seq16, ts, body = proto.decode(payload)
            except proto.FrameError as e:
                self._bad(node, received_at, topic, payload, str(e))
                return
            except Exception as e:  # noqa: BLE001 - a codec bug must not stop the fleet's ingest
                self._bad(node, received_at, topic, payload, f"decoder failed: {e!r}")
                return
            if mtype not in UPLINK_TYPES:
                self._bad(node, received_at, topic, payload,
                          f"message type {mtype} is not an uplink")
                return
            seq = self.extend(node, mtype, seq16, ts, body, received_at)
            batch.frames.append((node, seq, mtype, received_at, ts, self.provider, body))
            if mtype == proto.RESULT:
                batch.raw[(node, seq)] = (topic, bytes(payload[:BAD_PAYLOAD_KEPT]), len(payload))
            batch.touch[node] = (received_at, self.provider, self.seqs[node])
        elif kind == "senml":
            try:
                got, _skipped = intake.rows(node, payload, received_at,
                                            self.senml_fields.of(node))
            except SenmlError as e:
                self._bad(node, received_at, topic, payload, f"SenML: {e}")
                return
            self.senml.extend(got)
            if not retained:
                batch.touch[node] = (received_at, self.provider, self.seqs.get(node))
        elif kind == "conn":
            if payload == b"1":
                batch.conn_state[node] = 1
                if not retained:
                    # A retained "1" is the broker replaying the past, not contact now.
                    batch.touch[node] = (received_at, self.provider, self.seqs.get(node))
            elif payload == b"0":
                batch.conn_state[node] = 0
            else:
                self._bad(node, received_at, topic, payload, "conn payload is not 1 or 0")
        else:
            self._bad(node, received_at, topic, payload, f"unknown topic kind {kind!r}")

    def extend(self, node, mtype, seq16, ts, body, received_at) -> int:
        """The frame's extended seq; a STATUS may show the node's counter restarted (section 2)."""
        last = self.seqs.get(node)
        seq = proto.extend_seq(last, seq16)
        if mtype == proto.STATUS:
            boot = (received_at if ts is None else ts) - body["uptime"]
            known = self.boots.get(node)
            if last is not None and seq <= last and known is not None and boot > known + BOOT_SLACK:
                # A boot after the last one, numbered as if it came before: the counter restarted
                # (re-flashed, or its file lost). Number this life above every seq of the last.
                seq = (last // 0x10000 + 1) * 0x10000 + seq16
                self.restarts += 1
                t = received_at if ts is None else ts
                text = (f"seq restarted: STATUS seq {seq16} after seq {last & 0xFFFF}, boot at"
                        f" {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(boot))};"
                        f" numbered from {seq - seq16}")
                self.batch.restarts.append((node, t, received_at, EV_SEQ_RESTART, seq16, text))
                log.warning("node %s: %s", node, text)
            if known is None or boot > known:
                self.boots[node] = boot
        if last is None or seq > last:
            self.seqs[node] = seq
        return seq

    def _bad(self, node, received_at, topic, payload, error):
        # A prefix is enough to see what went wrong; the whole payload could be megabytes from
        # a misbehaving client (the broker's max_packet_size bounds it, an external broker may not).
        self.bad += 1
        self.batch.bad.append((node, received_at, self.provider, topic,
                               bytes(payload[:BAD_PAYLOAD_KEPT]), error, len(payload)))

    def flush(self) -> int:
        """Store the current batch in one transaction; return how many messages it held."""
        if not self.pending:
            return 0
        new = telemetry_store.store_batch(
            self.db, self.batch, proto.TELEMETRY, proto.STATUS, proto.EVENT, proto.RESULT,
            proto.OTA_UP,
        )
        self.stored += new
        self.duplicates += len(self.batch.frames) - new
        if self.senml:
            # After the batch's own transaction: a crash between the two redelivers the pack,
            # and (node, name, time) makes its second arrival a duplicate.
            fresh = profile_store.store_senml(self.db, self.senml, time.time())
            self.stored += fresh
            self.duplicates += len(self.senml) - fresh
            self.senml = []
        n = self.pending
        self.batch = telemetry_store.Batch()
        self.pending = 0
        every = self.refresh_every
        if every is not None and time.monotonic() - self.refreshed >= every:
            self.refresh()
        return n

    def refresh(self) -> None:
        """Merge what the other workers stored (nodes, last seqs, boots) into this one's memory."""
        self.known |= node_store.known_node_ids(self.db)
        seqs = self.seqs
        for node, seq in node_store.up_seqs(self.db).items():
            if seq > seqs.get(node, -1):
                seqs[node] = seq
        boots = self.boots
        for node, boot in node_store.boot_times(self.db).items():
            if boot > boots.get(node, float("-inf")):
                boots[node] = boot
        self.refreshed = time.monotonic()


class Worker:
    """The ingest process: a persistent MQTT session feeding Ingest in time- and size-bound batches.

    One thread does everything (read, decode, store, ack): Python threads would only contend for
    the GIL, and the kernel's socket buffer keeps receiving while a batch is committed.
    """

    def __init__(
        self,
        db_path,
        host="127.0.0.1",
        port=1883,
        username=None,
        password=None,
        client_id=CLIENT_ID,
        batch_size=5000,
        batch_delay=0.05,
        protocol=mqtt.MQTTv311,
        share_group=None,
    ):
        self.db = open_db(db_path)
        telemetry_store.tune_for_bulk_writes(self.db)
        upkeep_store.add_partitions(self.db, time.time())  # PostgreSQL: today's readings' days
        self.ingest = Ingest(self.db, refresh_every=REFRESH_EVERY if share_group else None)
        # Retained messages never reach a shared subscription (MQTT 5, 4.8.2): the conn flags a
        # node set before the workers subscribed arrive with its next connect instead.
        self.subscriptions = (topics.shared(share_group, SUBSCRIPTIONS) if share_group
                              else SUBSCRIPTIONS)
        self.host, self.port = host, port
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.protocol = protocol
        self.stopping = False
        self.connected = False
        self.acks: list[bytes] = []
        self.batch_started = 0.0
        kwargs = {}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = False
        self.client = mqtt.client(client_id, username, password, protocol=protocol,
                                  cls=mqtt.BufferedClient, manual_ack=True, **kwargs)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_frame = self._on_frame

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        self.connected = True
        if self.subscriptions is not SUBSCRIPTIONS:
            # A session that once ingested alone keeps its plain subscription, which would bring
            # it every message besides its share: drop it (a no-op when there is none).
            client.unsubscribe([topic for topic, _qos in SUBSCRIPTIONS])
        client.subscribe(self.subscriptions)
        log.info("connected to %s:%s (session present: %s)", self.host, self.port,
                 flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        # Message ids only mean something on the connection that delivered them: acking one on
        # the next connection would acknowledge some other message. The broker redelivers the
        # unacked ones on reconnect, and dedupe by (node, seq) absorbs the repeats.
        self.acks = []
        if not self.stopping:
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg):
        self._on_frame(msg._topic, msg.payload, msg.mid, msg.qos, msg.retain)

    def _on_frame(self, topic: bytes, payload: bytes, mid: int, qos: int, retain):
        if not self.ingest.pending:
            self.batch_started = time.monotonic()
        self.ingest.add(topic.decode("utf-8", "replace"), payload, time.time(), retain)
        if qos:
            self.acks.append(_PUBACK.pack(0x40, 2, mid))

    def connect(self):
        """Open the persistent session; raise IngestError if the broker cannot be reached."""
        try:
            if self.protocol == mqtt.MQTTv5:
                props = mqtt.connect_properties(SESSION_EXPIRY, RECEIVE_MAXIMUM)
                self.client.connect(self.host, self.port, keepalive=30, clean_start=False,
                                    properties=props)
            else:
                self.client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise IngestError(f"cannot reach the broker at {self.host}:{self.port}: {e}") from e

    def commit(self):
        """Store the pending batch, then ack its messages; retry the store until it works."""
        while self.ingest.pending:
            try:
                self.ingest.flush()
            except Exception:  # noqa: BLE001 - keep the batch and retry; never drop or crash
                log.exception("storing a batch of %d failed; retrying", self.ingest.pending)
                if self.stopping:
                    return  # not acked: the broker redelivers the batch to the next worker
                time.sleep(1.0)
        if self.acks and self.connected:
            # One write for the whole batch instead of one packet per message; a PUBACK with
            # reason "success" is the same 4 bytes in MQTT 3.1.1 and 5.
            self.client.send_pubacks(b"".join(self.acks))
        self.acks = []

    def poll(self, timeout: float):
        """Read from the broker for up to timeout s, committing whenever a batch is due.

        A batch closes when it is full, when it is batch_delay old, or when the broker has
        nothing more to send right now: with MQTT 3.1.1 the broker stops at its in-flight limit
        (max_inflight_messages) until we ack, so waiting longer would only stall the stream.
        """
        ingest = self.ingest
        before = ingest.pending
        if self.client.loop(0 if before else timeout):
            self.connected = False
        pending = ingest.pending
        if pending and (
            pending == before
            or pending >= self.batch_size
            or time.monotonic() - self.batch_started >= self.batch_delay
        ):
            self.commit()

    def run(self):
        """Ingest until stop() (or SIGTERM); commit and ack what was read before returning."""
        backoff = 0.2
        try:
            self.connect()
        except IngestError as e:
            log.warning("%s; retrying", e)
        try:
            while not self.stopping:
                if self.client.socket() is None:  # never connected, or the connection was lost
                    backoff = self._reconnect(backoff)
                else:
                    self.poll(self.batch_delay)
                    backoff = 0.2
            self.commit()
            self.client.loop(0.1)  # write the last acks
        finally:
            self.client.disconnect()
            self.db.conn.close()

    def _reconnect(self, backoff: float) -> float:
        self.commit()
        try:
            self.client.reconnect()
            return backoff
        except OSError as e:
            log.warning("broker at %s:%s unreachable (%s); retry in %.1f s", self.host,
                        self.port, e, backoff)
            time.sleep(backoff)
            return min(backoff * 2, 5.0)

    def stop(self, *_):
        """Ask run() to finish its current batch and return."""
        self.stopping = True


def main(settings, **kwargs):
    """Entry point of `fleet ingest`: run the worker against the configured broker and store."""
    host, port, username, password = settings.mqtt_login("ingest")
    worker = Worker(settings.db_path, host, port, username, password, **kwargs)
    Stopping(on_stop=worker.stop).install()
    log.info("ingesting from %s:%s into %s%s", host, port, describe(settings.db_path),
             f" (shared subscription group {kwargs['share_group']})"
             if kwargs.get("share_group") else "")
    worker.run()
    i = worker.ingest
    log.info("stopped: %d stored, %d duplicates, %d bad, %d seq restarts", i.stored, i.duplicates,
             i.bad, i.restarts)
