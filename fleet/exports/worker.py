"""The export worker (`fleet export run`): one delivery loop per destination over the store.

Each destination has its own thread and database connection, so a slow or dead destination
never holds up another. A loop reads the next batch after the destination's durable cursor
(fleet/store/exports.py), hands it to the kind's adapter, and moves the cursor only once the
adapter returned: a crash or restart sends the last batch again (adapters make that harmless
with the items' idempotent ids), never skips one. A destination that is down gets the same batch
again after a backoff that doubles up to a cap; its state (why, since when, next try) is stored
for the destinations page. Destinations added, changed or removed are picked up within RELOAD_S.
"""

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import lru_cache

from fleet.nodes.senml import name_and_unit, number
from fleet.store import exports as export_store
from fleet.store.migrate import open_db

from . import ADAPTERS, registry
from .adapter import Batch, DestinationDown, ExportError, Item, Node

log = logging.getLogger("fleet.exports")
BATCH = 2000  # readings (and as many events) per send; docs/benchmarks.md "Exports"
GROW = 4  # a loop that is behind doubles its batch, up to GROW x BATCH
IDLE_MIN_S = 0.05  # a caught-up loop looks for new rows after this, doubling up to IDLE_S
IDLE_S = 0.5
RELOAD_S = 2.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


def reading_id(node: str, qid: int, inst: int, t: float) -> str:
    """A reading's idempotent id: the same stored reading always gets the same one."""
    return f"r:{node}:{qid}:{inst}:{round(t * 1000)}"


def node_of(row: dict) -> Node:
    """A node registry row (export_store.node_facts) as adapters see it."""
    return Node(id=row["id"], name=row["name"], board=row["board"],
                firmware=row["firmware_version"], battery=row["battery"],
                online=bool(row["online"]), last_seen=row["last_seen"], lat=row["lat"],
                lon=row["lon"], location=row["location"],
                tags=tuple(json.loads(row["tags"] or "[]")))


@lru_cache(maxsize=1024)
def _quantity(qid: int, inst: int) -> tuple[str, str | None, bool]:
    """(SenML name, unit, whether its values are ints) of a quantity instance, looked up once."""
    name, unit = name_and_unit(qid, inst)
    return name, unit, isinstance(number(qid, 1.0), int)  # number() makes whole values ints


def build_batch(db, readings: list[tuple], events: list[tuple]) -> Batch:
    """Store rows as the Items adapters receive (see adapter.py), with their nodes' facts."""
    ids = {r[1] for r in readings} | {e[1] for e in events}
    nodes = {row["id"]: node_of(row) for row in export_store.node_facts(db, ids)}
    for missing in ids - nodes.keys():  # removed from the registry since it sent them
        nodes[missing] = Node(id=missing)
    # The worker's own cost per reading (docs/benchmarks.md): positional Items, the registry
    # looked up once per quantity, reading_id and number() written out inline.
    items = []
    add = items.append
    for _id, node, t, qid, inst, value in readings:
        name, unit, ints = _quantity(qid, inst)
        if ints and isinstance(value, float) and value.is_integer():
            value = int(value)
        add(Item(f"r:{node}:{qid}:{inst}:{round(t * 1000)}", "reading", nodes[node], t, value,
                 qid, inst, name, unit))
    for event_id, node, t, code, value, text in events:
        add(Item(f"e:{node}:{event_id}", "event", nodes[node], t, value, code=code, text=text))
    return Batch(items=tuple(items), nodes=nodes)


def fetch_batch(db, row: dict, at: tuple, limit: int) -> tuple:
    """The batch after cursor position at = (reading_at, event_at) of a destination row:
    (readings, events, reading position, event position, Batch or None when empty, limit)."""
    readings, events, r_pos, e_pos = export_store.fetch_after(
        db, at[0], at[1], row["nodes"], row["tags"], limit, row["org_id"])
    batch = build_batch(db, readings, events) if readings or events else None
    return readings, events, r_pos, e_pos, batch, limit


class Loop:
    """Delivers one destination's backlog, batch by batch, until stopped.

    While it is behind, a loop reads the next batch ahead on a second connection (its own
    thread) while the current one is being sent, and doubles its batch up to GROW x `batch`:
    the store's and the destination's waits overlap, and fewer, larger batches cost fewer
    round trips per reading. The next batch is still sent only after the current one was
    delivered and the cursor moved, and a read-ahead is used only if it starts where the
    cursor stands then, with the same selection; anything else is dropped and read again.
    """

    def __init__(self, settings, name: str, stop: threading.Event, batch: int = BATCH,
                 max_backoff: float = MAX_BACKOFF_S):
        self.settings = settings
        self.name = name
        self.stop = stop
        self.batch = batch
        self.limit = batch  # this step's batch: `batch`, larger while behind
        self.max_backoff = max_backoff
        self._last_failed: str | None = None  # why the last step could not deliver, if so
        self._pool: ThreadPoolExecutor | None = None  # reads ahead, on self._ahead_db
        self._ahead_db = None
        self._ahead: tuple | None = None  # (where it starts, Future of fetch_batch)
        self.thread = threading.Thread(target=self.run, name=f"export-{name}", daemon=True)

    def run(self) -> None:
        db = open_db(self.settings.db_path)
        sender = None
        try:
            try:
                dest = registry.destination(db, self.settings.data_dir, self.name)
                adapter = ADAPTERS[dest.kind]
                if getattr(adapter, "NEEDS_BROKER", False):
                    dest = replace(dest, broker=self.settings.mqtt_login("exports"))
                sender = adapter.open(dest)
            except (KeyError, ExportError) as e:
                log.error("export %s: %s", self.name, e)
                export_store.record_failure(db, self.name, str(e), time.time(), None)
                return
            self._ahead_db = open_db(self.settings.db_path)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"export-{self.name}-ahead")
            row = export_store.get_destination(db, self.name)
            attempts = row["attempts"] if row else 0
            idle = IDLE_MIN_S
            while not self.stop.is_set():
                if self.step(db, sender):
                    attempts = 0
                    idle = IDLE_MIN_S
                    continue
                if self._last_failed:
                    attempts += 1
                    delay = min(self.max_backoff, FIRST_BACKOFF_S * 2 ** (attempts - 1))
                    export_store.record_failure(db, self.name, self._last_failed, time.time(),
                                                time.time() + delay)
                    self.stop.wait(delay)
                else:
                    self.stop.wait(idle)
                    idle = min(IDLE_S, idle * 2)
        finally:
            self._drop_ahead()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._ahead_db is not None:
                self._ahead_db.close()
            if sender is not None:
                sender.close()
            db.close()

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    def _take_ahead(self, start: tuple) -> tuple | None:
        """The batch read ahead if it starts at `start` (cursor and selection), else None."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead[0] != start:
            if ahead is not None:
                ahead[1].cancel()
            return None
        try:
            return ahead[1].result()
        except Exception:  # noqa: BLE001 - read again on this thread, where an error shows
            log.debug("export %s: read-ahead failed", self.name, exc_info=True)
            return None

    def step(self, db, sender) -> bool:
        """Send the next batch; True if one was delivered or the cursor moved past rows this
        destination does not take (more may be waiting)."""
        self._last_failed = None
        row = export_store.get_destination(db, self.name)
        if row is None:
            self._drop_ahead()
            self.stop.set()
            return False
        at = (row["reading_at"], row["event_at"])
        selection = (row["nodes"], row["tags"], row["org_id"])
        got = self._take_ahead((at, selection)) or fetch_batch(db, row, at, self.limit)
        readings, events, r_pos, e_pos, batch, limit = got
        behind = len(readings) >= limit or len(events) >= limit
        self.limit = min(limit * 2, self.batch * GROW) if behind else self.batch
        if batch is None:
            if (r_pos, e_pos) != at:
                # Past rows this destination does not take (other nodes', or a gap of ids):
                # progress, so look again at once rather than idle as if caught up.
                export_store.advance(db, self.name, r_pos, e_pos, 0, [], time.time())
                return True
            return False
        if behind and self._pool is not None:
            self._ahead = (((r_pos, e_pos), selection),
                           self._pool.submit(fetch_batch, self._ahead_db, row, (r_pos, e_pos),
                                             self.limit))
        try:
            delivery = sender.send(batch)
        except DestinationDown as e:
            self._drop_ahead()
            self._last_failed = str(e) or type(e).__name__
            log.warning("export %s: destination down: %s", self.name, self._last_failed)
            return False
        except Exception as e:  # noqa: BLE001 - an adapter bug must not end the loop silently
            self._drop_ahead()
            log.exception("export %s: adapter failed", self.name)
            self._last_failed = f"the {row['kind']} adapter failed: {e!r}"
            return False
        refused = [(i, r) for i, r in delivery.refused.items()]
        for item_id, reason in refused:
            log.warning("export %s: refused %s: %s", self.name, item_id, reason)
        export_store.advance(db, self.name, r_pos, e_pos, len(batch.items) - len(refused),
                             refused, time.time())
        return True


def _fingerprint(db, names):
    return {d["name"]: (d["kind"], d["url"], repr(d["options"]), d["nodes"], d["tags"],
                        d["enabled"], d["secret"], d["created"])
            for d in export_store.list_destinations(db)
            if d["enabled"] and (not names or d["name"] in names)}


def run(settings, stop: threading.Event | None = None, names=None, batch: int = BATCH,
        max_backoff: float = MAX_BACKOFF_S) -> None:
    """Run until stop is set: one delivery loop per enabled destination (or those in names)."""
    stop = stop or threading.Event()
    db = open_db(settings.db_path)
    loops: dict[str, tuple] = {}  # name -> (fingerprint, Loop, its stop event)
    try:
        while not stop.is_set():
            now = _fingerprint(db, names)
            for name in list(loops):
                if loops[name][0] != now.get(name) or not loops[name][1].thread.is_alive():
                    loops[name][2].set()
                    loops[name][1].thread.join(timeout=30)
                    del loops[name]
            for name, fp in now.items():
                if name not in loops:
                    ev = threading.Event()
                    loop = Loop(settings, name, ev, batch=batch, max_backoff=max_backoff)
                    loops[name] = (fp, loop, ev)
                    loop.thread.start()
                    log.info("export %s: delivering", name)
            if not loops:
                log.debug("no export destinations yet")
            stop.wait(RELOAD_S)
    finally:
        for _fp, _loop, ev in loops.values():
            ev.set()
        for _fp, loop, _ev in loops.values():
            loop.thread.join(timeout=30)
        db.close()
