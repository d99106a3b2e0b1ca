"""The provider ingest worker: subscribes to each LoRaWAN provider's broker, stores frames.

One MQTT client per provider (their brokers, their credentials); messages are decoded by the
provider's adapter, then stored like the own broker's (fleet/ingest.py: same batches, same
dedupe by (node, seq)), plus one reception row per gateway, once per uplink message however often
the provider delivers it (keyed by the provider's own identity of it, Uplink.uplink_key). A
confirmed uplink also counts the network's ACK against the node's daily downlink budget
(fleet/providers/downlinks.py). A message is acknowledged to the provider's broker only after its
batch is committed.
"""

import logging
import queue
import time

from polylink import proto

from fleet import mqtt
from fleet.ingest import UPLINK_TYPES, Ingest
from fleet.profiles.jscodec import CodecError
from fleet.profiles.uplinks import ProfiledDevices
from fleet.store import providers as provider_store
from fleet.store.migrate import open_db
from fleet.store.upkeep import Held

from . import ADAPTERS, FPORT, ProviderError, registry

log = logging.getLogger("fleet.providers")
BATCH = 500
FLUSH_S = 0.2
RELOAD_S = 5.0
# s a SQLite provider lock outlives a worker that died holding it (PostgreSQL lets go at once);
# renewed every RELOAD_S, so a worker stalled this long loses the provider to another.
LEASE_S = 15.0


class ProviderIngest(Ingest):
    """Turns one provider's uplink messages into stored frames and receptions (no network)."""

    def __init__(self, db, name: str, kind: str):
        super().__init__(db, provider=name)
        self.kind = kind
        self.adapter = ADAPTERS[kind]
        self.ids = provider_store.resolve(db, name)
        self.receptions: list[tuple] = []
        self.idents: dict[str, tuple] = {}
        self.acks: list[tuple] = []  # (node, provider, t, seq, fcnt) of confirmed uplinks
        self.devices = ProfiledDevices(db)  # other suppliers' devices (fleet/profiles)

    def _ack(self, node, up, received_at, seq=None) -> None:
        """The network ACKs a confirmed uplink with a downlink, whatever we make of its frame.

        Stored at most once per (node, provider, seq, FCnt): the provider publishes one message
        for all gateways that heard the frame, and a redelivered MQTT message or a retransmission
        with the same FCnt is the same uplink. A frame we could not decode has no seq and counts
        each time (over-counting is the safe side of a budget).
        """
        if up.confirmed:
            self.acks.append((node, self.provider, received_at, seq, up.fcnt))

    def add_message(self, topic: str, payload: bytes, received_at: float) -> None:
        """Decode one provider message into the current batch; bad ones are kept, not raised."""
        try:
            up = self.adapter.parse_uplink(topic, payload)
        except ProviderError as e:
            self.pending += 1
            self._bad(None, received_at, topic, payload, str(e))
            return
        if up is None:
            return  # joins, acks, ...: nothing to store
        self.pending += 1
        node = self.ids.get(up.ext_id)
        if node is None:
            # registered since we started?
            self.ids = provider_store.resolve(self.db, self.provider)
            node = self.ids.get(up.ext_id)
        if node is None:
            self._bad(None, received_at, topic, payload,
                      f"DevEUI {up.ext_id} is not a registered node's transport identity")
            return
        profile = self.devices.profile(node)
        if profile is not None:
            self._add_profiled(node, profile, up, topic, payload, received_at)
            return
        if up.fport != FPORT:
            self._ack(node, up, received_at)
            self._bad(node, received_at, topic, payload,
                      f"FPort {up.fport} is not Polylink's FPort {FPORT}")
            return
        try:
            mtype, seq16, ts, body = proto.decode(up.payload)
        except proto.FrameError as e:
            self._ack(node, up, received_at)
            self._bad(node, received_at, topic, payload, str(e))
            return
        except Exception as e:  # noqa: BLE001 - a codec bug must not stop ingest
            self._ack(node, up, received_at)
            self._bad(node, received_at, topic, payload, f"decoder failed: {e!r}")
            return
        if mtype not in UPLINK_TYPES:
            self._ack(node, up, received_at)
            self._bad(node, received_at, topic, payload, f"message type {mtype} is not an uplink")
            return
        seq = self.extend(node, mtype, seq16, ts, body, received_at)
        self._store(node, seq, mtype, received_at, ts, body, up)

    def _store(self, node, seq, mtype, received_at, ts, body, up) -> None:
        if node not in self.known:
            self.known.add(node)
            self.batch.new_nodes.append((node, self.provider, received_at))
        self.batch.frames.append((node, seq, mtype, received_at, ts, self.provider, body))
        self.batch.touch[node] = (received_at, self.provider, self.seqs[node])
        for r in up.receptions or [None]:
            self.receptions.append((node, seq, self.provider, received_at,
                                    r.gateway if r else None, r.rssi if r else None,
                                    r.snr if r else None, up.sf, up.dr, up.freq, up.airtime,
                                    up.fcnt, up.uplink_key))
        self.idents[up.ext_id] = (node, up.device_id, received_at, up.dr)
        self._ack(node, up, received_at, seq)

    def _add_profiled(self, node, profile, up, topic, payload, received_at) -> None:
        """A frame of another supplier's device: its profile's codec, numbered by FCnt."""
        if up.fport == 0:
            return  # MAC commands only; nothing for the application
        try:
            readings = self.devices.decode(node, profile, up, received_at, self.provider)
        except CodecError as e:
            # Counted against this node only; the next frame gets a fresh try (and a fresh
            # sandbox if this one was interrupted).
            self._ack(node, up, received_at)
            self._bad(node, received_at, topic, payload, f"codec of profile {profile}: {e}")
            return
        seq = self.devices.number(self.seqs, node, up.fcnt, received_at, self.batch.restarts)
        self._store(node, seq, proto.TELEMETRY, received_at, None, readings, up)

    def flush(self) -> int:
        n = super().flush()
        self.devices.flush()
        if self.receptions or self.idents or self.acks:
            provider_store.store_radio(
                self.db, self.receptions,
                [(self.provider, ext, node, dev, seen, dr)
                 for ext, (node, dev, seen, dr) in self.idents.items()],
                self.acks)
            self.receptions = []
            self.idents = {}
            self.acks = []
        return n


def connect(cfg: dict, password: str | None, on_message):
    """A client subscribed to one provider's uplink topics; QoS 1 acked by us after storing."""
    client = mqtt.client(f"polylink-{cfg['name']}", cfg["username"] if cfg.get("username")
                         else None, password, tls=bool(cfg.get("tls")), clean_session=False,
                         manual_ack=True)
    subs = ADAPTERS[cfg["kind"]].subscriptions(cfg)

    def on_connect(c, userdata, flags, reason, props):
        if reason.is_failure:
            log.error("provider %s: broker refused the connection: %s", cfg["name"], reason)
            return
        c.subscribe(subs)
        log.info("provider %s: subscribed to %s", cfg["name"], ", ".join(t for t, _ in subs))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect_async(cfg["host"], cfg["port"], keepalive=60)
    client.loop_start()
    return client


def _fingerprint(db, names):
    return [(p["name"], p["kind"], p["host"], p["port"], p["tls"], p["application"],
             p["tenant"], p["username"], p["password_set"], p["created"])
            for p in registry.list_all(db) if not names or p["name"] in names]


def _claim(db, leases: dict, configured) -> tuple:
    """The providers this worker holds now: each is served by one worker at a time.

    Any number of provider workers may run, on one machine or several: each provider's lock
    (`provider:NAME`) goes to one of them, which alone opens that provider's MQTT session (its
    client id is the provider's, so the broker's queue of unacked uplinks follows the lock). A
    worker that dies lets go (PostgreSQL at once, SQLite when the lease runs out) and another
    takes the provider over within RELOAD_S; whatever the dead one stored but never acked comes
    again and is a duplicate by (node, seq).
    """
    for name in set(leases) - set(configured):
        leases.pop(name).release()
    for name in configured:
        if name not in leases:
            leases[name] = Held(db, f"provider:{name}", lease=LEASE_S)
    return tuple(sorted(name for name in configured if leases[name].renew()))


def run(settings, stop=None, names=None) -> None:
    """Run until stop (a threading.Event) is set: every provider this worker holds, one client
    each (see _claim: other workers serve the rest).

    Providers added, changed or removed in the fleet, and providers another worker let go, are
    picked up within RELOAD_S.
    """
    db = open_db(settings.db_path)
    inbox: queue.Queue = queue.Queue()
    workers: dict = {}
    clients: list = []
    leases: dict[str, Held] = {}
    seen = None
    acks: list = []
    last = time.monotonic()
    checked = 0.0
    try:
        while stop is None or not stop.is_set():
            if time.monotonic() - checked >= RELOAD_S:
                checked = time.monotonic()
                configured = _fingerprint(db, names)
                mine = _claim(db, leases, [p[0] for p in configured])
                now = (configured, mine)
                if now != seen:
                    _flush(workers, acks)
                    acks = []
                    for c in clients:
                        c.loop_stop()
                        c.disconnect()
                    workers, clients = _start(db, settings, inbox, set(mine),
                                              others=len(configured) - len(mine))
                    seen = now
            try:
                name, c, topic, payload, t, mid, qos = inbox.get(timeout=FLUSH_S)
                if name in workers:
                    workers[name].add_message(topic, payload, t)
                    acks.append((c, mid, qos))
            except queue.Empty:
                pass
            if acks and (len(acks) >= BATCH or time.monotonic() - last >= FLUSH_S):
                _flush(workers, acks)
                acks = []
                last = time.monotonic()
    finally:
        _flush(workers, acks)
        for c in clients:
            c.loop_stop()
            c.disconnect()
        for lease in leases.values():
            lease.release()
        db.close()


def _flush(workers, acks):
    for w in workers.values():
        w.flush()
    for c, mid, qos in acks:
        if qos:
            c.ack(mid, qos)


def _start(db, settings, inbox, mine, others=0):
    workers, clients = {}, []
    for p in registry.list_all(db):
        if p["name"] not in mine:
            continue
        try:
            cfg, pw = registry.login(db, settings.data_dir, p["name"])
        except ProviderError as e:
            log.error("%s", e)
            continue
        workers[p["name"]] = ProviderIngest(db, p["name"], p["kind"])

        def on_message(c, userdata, msg, name=p["name"]):
            inbox.put((name, c, msg.topic, msg.payload, time.time(), msg.mid, msg.qos))

        clients.append(connect(cfg, pw, on_message))
    if others:
        log.info("%d provider(s) served by another worker; taking over if it stops", others)
    if not workers and not others:
        log.info("no providers configured yet; add one at /providers or with"
                 " `fleet provider add`")
    return workers, clients
