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
from dataclasses import replace

from fleet.nodes.senml import name_and_unit, number
from fleet.store import exports as export_store
from fleet.store.migrate import open_db

from . import ADAPTERS, registry
from .adapter import Batch, DestinationDown, ExportError, Item, Node

log = logging.getLogger("fleet.exports")
BATCH = 2000  # readings (and as many events) per send; docs/benchmarks.md "Exports"
IDLE_S = 0.5  # how long a caught-up loop waits before looking for new rows
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


def build_batch(db, readings: list[tuple], events: list[tuple]) -> Batch:
    """Store rows as the Items adapters receive (see adapter.py), with their nodes' facts."""
    ids = {r[1] for r in readings} | {e[1] for e in events}
    nodes = {row["id"]: node_of(row) for row in export_store.node_facts(db, ids)}
    for missing in ids - nodes.keys():  # removed from the registry since it sent them
        nodes[missing] = Node(id=missing)
    items = []
    for _id, node, t, qid, inst, value in readings:
        name, unit = name_and_unit(qid, inst)
        items.append(Item(id=reading_id(node, qid, inst, t), kind="reading", node=nodes[node],
                          t=t, value=number(qid, value), qid=qid, inst=inst, name=name,
                          unit=unit))
    for event_id, node, t, code, value, text in events:
        items.append(Item(id=f"e:{node}:{event_id}", kind="event", node=nodes[node], t=t,
                          value=value, code=code, text=text))
    return Batch(items=tuple(items), nodes=nodes)


class Loop:
    """Delivers one destination's backlog, batch by batch, until stopped."""

    def __init__(self, settings, name: str, stop: threading.Event, batch: int = BATCH,
                 max_backoff: float = MAX_BACKOFF_S):
        self.settings = settings
        self.name = name
        self.stop = stop
        self.batch = batch
        self.max_backoff = max_backoff
        self._last_failed: str | None = None  # why the last step could not deliver, if so
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
            row = export_store.get_destination(db, self.name)
            attempts = row["attempts"] if row else 0
            while not self.stop.is_set():
                if self.step(db, sender):
                    attempts = 0
                    continue
                if self._last_failed:
                    attempts += 1
                    delay = min(self.max_backoff, FIRST_BACKOFF_S * 2 ** (attempts - 1))
                    export_store.record_failure(db, self.name, self._last_failed, time.time(),
                                                time.time() + delay)
                    self.stop.wait(delay)
                else:
                    self.stop.wait(IDLE_S)
        finally:
            if sender is not None:
                sender.close()
            db.close()

    def step(self, db, sender) -> bool:
        """Send the next batch; True if one was delivered (more may be waiting)."""
        self._last_failed = None
        row = export_store.get_destination(db, self.name)
        if row is None:
            self.stop.set()
            return False
        readings, events, r_pos, e_pos = export_store.fetch_after(
            db, row["reading_at"], row["event_at"], row["nodes"], row["tags"], self.batch,
            row["org_id"])
        if not readings and not events:
            if (r_pos, e_pos) != (row["reading_at"], row["event_at"]):
                export_store.advance(db, self.name, r_pos, e_pos, 0, [], time.time())
            return False
        batch = build_batch(db, readings, events)
        try:
            delivery = sender.send(batch)
        except DestinationDown as e:
            self._last_failed = str(e) or type(e).__name__
            log.warning("export %s: destination down: %s", self.name, self._last_failed)
            return False
        except Exception as e:  # noqa: BLE001 - an adapter bug must not end the loop silently
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
