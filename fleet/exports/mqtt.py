"""MQTT destinations: normalized readings as SenML JSON on the fleet's own broker.

Each node's items of a batch go out as SenML packs (senml.py) on pl/v1/data/{node}, one per
node unless it would be larger than the broker takes (then several, in order), QoS 1,
not retained, published with the broker's `polylink-exports` service login; integrators read
them with read-only logins (readers.py). A batch counts as delivered once the broker acknowledged
every message of it; a broker that is gone or silent is down and the batch is published again
(a subscriber may then see a pack twice: a record's name and time are its identity).
"""

import time

import orjson

from fleet import mqtt, topics
from fleet.broker.server import MAX_PACKET_SIZE

from .adapter import Batch, Delivery, Destination, DestinationDown, ExportError
from .senml import pack

KIND = "mqtt"
LABEL = "MQTT (SenML JSON on the fleet's broker, pl/v1/data/{node})"
SECRET = None
NEEDS_BROKER = True  # the worker fills Destination.broker with the exports service login
FLEET_BROKER = "fleet"  # the only URL today: the fleet's own broker
INFLIGHT = 1000  # QoS 1 publishes not yet acknowledged (paho's default is 20)


def check(url: str, options: dict) -> dict:
    if url != FLEET_BROKER:
        raise ExportError(f"mqtt: url must be {FLEET_BROKER!r} (the fleet's own broker; "
                          "integrators subscribe there with `fleet export reader add`)")
    if options:
        raise ExportError(f"mqtt: unknown options {', '.join(sorted(options))} (it has none)")
    return {}


def payload_limit(topic: str) -> int:
    """The largest payload of a QoS 1 PUBLISH on topic that the fleet's broker takes: its
    max_packet_size less the fixed header (<= 5 bytes), the topic and the packet id."""
    return MAX_PACKET_SIZE - 5 - 2 - len(topic.encode()) - 2


def bodies(node_id: str, items: list, limit: int, delivery: Delivery):
    """One node's items as SenML packs of at most `limit` bytes each, in order: the broker
    disconnects a client that sends a larger packet (and the batch would never go out), so a
    node with many items in a batch (a large batch, few selected nodes) goes out in several
    packs. An item too large alone is refused."""
    body = orjson.dumps(pack(node_id, items))  # compact JSON, as webhook.py sends
    if len(body) <= limit:
        yield body
        return
    if len(items) == 1:
        delivery.refuse(items, f"its SenML record is {len(body)} bytes, more than the"
                        f" {limit} a message on the fleet's broker may carry")
        return
    parts = min(len(items), -(-len(body) // limit) + 1)  # a little more than it needs
    step = -(-len(items) // parts)
    for i in range(0, len(items), step):
        yield from bodies(node_id, items[i:i + step], limit, delivery)


class Sender:
    def __init__(self, dest: Destination):
        if dest.broker is None:
            raise ExportError("mqtt: the worker gave no broker login")
        self.host, self.port, user, password = dest.broker
        self.timeout = dest.timeout
        self.client = mqtt.client(f"polylink-exports-{dest.name}", user, password)
        self.connected = False
        self.refused: str | None = None
        # paho keeps 20 QoS 1 messages in flight by default and queues the rest until PUBACKs
        # come back; a batch is ~100 packs (one per node), so it waited several round trips.
        # The fleet's mosquitto takes any number from an MQTT 3.1.1 client.
        self.client.max_inflight_messages_set(INFLIGHT)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.started = False

    def _on_connect(self, c, userdata, flags, reason, props):
        self.connected = not reason.is_failure
        self.refused = None if self.connected else f"the broker refused the login: {reason}"

    def _on_disconnect(self, c, userdata, flags, reason, props):
        self.connected = False

    def _ensure(self) -> None:
        if not self.started:
            try:
                self.client.connect(self.host, self.port, keepalive=30)
            except OSError as e:
                raise DestinationDown(f"cannot reach the broker at {self.host}:{self.port}:"
                                      f" {e.strerror or e}") from None
            self.client.loop_start()
            self.started = True
        if not self.connected:
            for _ in range(int(self.timeout * 20)):
                if self.connected or self.refused:
                    break
                time.sleep(0.05)
        if not self.connected:
            raise DestinationDown(self.refused or f"no connection to the broker at"
                                  f" {self.host}:{self.port}")

    def send(self, batch: Batch) -> Delivery:
        self._ensure()
        delivery = Delivery()
        infos = []
        for node_id, items in batch.by_node().items():
            topic = topics.data(node_id)
            for body in bodies(node_id, items, payload_limit(topic), delivery):
                infos.append(self.client.publish(topic, body, qos=1))
        for info in infos:
            try:
                info.wait_for_publish(self.timeout)
            except RuntimeError as e:  # paho: the message could not be queued (disconnected)
                raise DestinationDown(f"the broker connection dropped: {e}") from None
            if not info.is_published():
                raise DestinationDown(f"the broker did not acknowledge within {self.timeout:g} s")
        return delivery

    def close(self) -> None:
        if self.started:
            self.client.disconnect()
            self.client.loop_stop()


def open(dest: Destination) -> Sender:  # noqa: A001 - the adapter contract's name
    return Sender(dest)
