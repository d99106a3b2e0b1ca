"""The contract every export adapter keeps, and the types the delivery worker hands it.

An adapter is one module per destination kind (webhook.py, mqtt.py, ngsild.py, sensorthings.py)
and provides, as module attributes:

    KIND: str                                  # "webhook", "ngsi-ld", ... (registry key)
    LABEL: str                                 # what the destinations page calls the kind
    SECRET: str | None                         # what its secret is, for the form ("HMAC key",
                                               # "password", "bearer token"); None: no secret
    def check(url: str, options: dict) -> dict
        # Validate the kind's own settings (the URL and its options); return the options
        # normalised. Raises ExportError whose text says which field is wrong and why.
        # No network: it runs when a destination is registered.
    def open(dest: Destination) -> Sender
        # A sender for one destination. It may connect lazily; it must not raise for a
        # destination that is down (send() says so).

and a Sender is

    class Sender:
        def send(self, batch: Batch) -> Delivery
            # Deliver a batch. Returns a Delivery naming the items the destination refused for
            # themselves (a 4xx about one entity, a value the standard cannot carry): those are
            # reported and skipped, the rest of the batch counts as delivered. Raises
            # DestinationDown when the destination could not take the batch at all (connection
            # refused, timeout, 5xx, 401/403, 429): nothing of it counts as delivered and the
            # worker sends the same batch again after a capped backoff.
        def close(self) -> None

Optional module attribute: NEEDS_BROKER = True when the adapter publishes on the fleet's own
broker; the worker then fills Destination.broker with the exports service login.

Delivery rules the worker guarantees to adapters:
- Batches of one destination are sent one at a time, in store order (per node: in time order
  of arrival), and a batch is sent again unchanged until it is delivered or its items refused.
  The cursor moves only after send() returns, so a crash re-sends at most the last batch:
  adapters make re-sends harmless with `Item.id` (an upsert key, a message id, a header).
- Item.id is stable for ever: the same stored reading always gets the same id, whichever
  worker, restart or destination sends it.
- Items of nodes the destination does not select never reach the adapter.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache


class ExportError(ValueError):
    """A destination's settings are malformed; the text says which field and why."""


class DestinationDown(Exception):
    """The destination could not take a batch at all; the text says why in plain words."""


@dataclass(frozen=True)
class Node:
    """What a destination may show about the node an item comes from."""

    id: str
    name: str | None = None
    board: str | None = None
    firmware: str | None = None
    battery: float | None = None  # volts, from the node's last STATUS or battery reading
    online: bool = False
    last_seen: float | None = None  # unix seconds
    lat: float | None = None  # WGS84 degrees, None when the node has no position
    lon: float | None = None
    location: str | None = None  # free text ("Marktplatz, pole 4")
    tags: tuple[str, ...] = ()


@dataclass(slots=True)
class Item:
    """One stored reading or event, as every adapter receives it; adapters only read it.

    kind "reading": qid, inst, value set, name/unit from the registry (SenML name with "/inst"
    for inst > 0, SenML unit; unit None for a quantity this fleet does not know).
    kind "event": code, value (int or None) and text set; qid/inst/name/unit are None.
    """

    id: str  # stable idempotent id: "r:<node>:<qid>:<inst>:<t in ms>" or "e:<node>:<event id>"
    kind: str  # "reading" | "event"
    node: Node
    t: float  # unix seconds when it was measured (the frame's time)
    value: float | int | None = None
    qid: int | None = None
    inst: int | None = None
    name: str | None = None
    unit: str | None = None
    code: int | None = None
    text: str | None = None
    # Not frozen: a frozen dataclass sets each field through object.__setattr__, 1.6 us an item
    # against 0.2 us with slots, a sixth of the worker's CPU per reading (docs/benchmarks.md).


@dataclass(frozen=True)
class Batch:
    """Items in store order; every item's node is in `nodes` (one Node object per node)."""

    items: tuple[Item, ...]
    nodes: dict[str, Node] = field(default_factory=dict)

    def by_node(self) -> dict[str, list[Item]]:
        """Items grouped by node id, each group in batch order."""
        out: dict[str, list[Item]] = {}
        for item in self.items:
            out.setdefault(item.node.id, []).append(item)
        return out


@dataclass
class Delivery:
    """What a destination refused of a batch: item id -> the reason in plain words."""

    refused: dict[str, str] = field(default_factory=dict)

    def refuse(self, items, reason: str) -> None:
        """Mark items (or one item) refused for the same reason."""
        for item in items if isinstance(items, (list, tuple)) else (items,):
            self.refused[item.id] = reason


@dataclass(frozen=True)
class Destination:
    """A registered destination as its sender sees it (the secret decrypted, for it alone)."""

    name: str
    kind: str
    url: str
    options: dict
    secret: str | None = None
    timeout: float = 10.0  # seconds for one send; slower counts as down
    # (host, port, user, password) of the fleet's own broker with the exports service login,
    # filled in by the worker for adapters that publish there (mqtt.py); None elsewhere.
    broker: tuple | None = None


# EVENT codes (docs/firmware.md) as the words NGSI-LD and SensorThings carry them.
EVENT_NAMES = {1: "badDownlink", 2: "sensorFailed", 4: "crashed"}


def event_name(code: int | None) -> str:
    """An EVENT code as a word: the table's, else "event<code>" (a code newer than the table)."""
    return EVENT_NAMES.get(code, f"event{code}") if code is not None else "event"


@lru_cache(maxsize=4096)  # a frame's readings share its time; NGSI-LD writes each one 2-3 times
def iso(t: float) -> str:
    """Unix seconds as the ISO 8601 time NGSI-LD and SensorThings write (UTC, Z, milliseconds)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
