"""Rollouts: one release to a chosen set of nodes, in stages, counted only on confirmed boots.

A rollout is a row in `rollouts` plus one `rollout_nodes` row per target node. tick() is the whole
engine: it folds the nodes' OTA_UP reports into their states, sends offers (OTA_DOWN) to online
nodes of the stages reached, pauses on failures or a health regression, and moves to the next
stage after its soak time. `fleet run` calls it every few seconds; it is idempotent.
"""

import hashlib
import math
import os
import threading
import time

from polylink import codes, proto

from fleet import mqtt, topics
from fleet.store import commands as command_store
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store import upkeep as upkeep_store
from fleet.store.base import connect
from fleet.store.scope import PLATFORM_ORG

DEFAULT_STAGES = [{"percent": 1, "soak": 3600}, {"percent": 10, "soak": 3600},
                  {"percent": 50, "soak": 3600}, {"percent": 100, "soak": 0}]
REOFFER_AFTER = 600  # s: an online node silent this long about its update gets the offer again
# s: a node that said it reboots into the release, or confirmed it without its STATUS showing it,
# and stays so this long has failed: its stage can finish (or pause) instead of waiting forever.
# The trial itself takes ota.confirm (300 s by default) after the reboot.
STUCK_AFTER = 3600
# States in which a node owes us news; silence in them means a lost offer or a node that lost
# power mid-update (it forgets the offer), so the offer is repeated.
IN_FLIGHT = ("offered", "downloading", "verified", "deferred")
HEALTH_MIN_UPDATED = 3  # nodes that must be updated before health is compared at all
TERMINAL = ("succeeded", "failed", "rolled_back", "declined", "skipped")
FAILED = ("failed", "rolled_back")
# OTA_UP state code -> rollout node state (docs/ota.md)
# OTA_UP state and reason names, keyed by the node's codes (polylink/codes.py)
REPORT_STATES = {getattr(codes, n.upper()): n for n in (
    "offered", "downloading", "verified", "rebooting", "confirmed", "failed", "rolled_back",
    "deferred", "declined")}
REASONS = {codes.BAD_SIGNATURE: "bad signature", codes.UNKNOWN_KEY: "unknown key",
           codes.HASH_MISMATCH: "hash mismatch", codes.BOARD: "incompatible board",
           codes.MICROPYTHON: "MicroPython too old", codes.DOWNLOAD: "download failed",
           codes.STORAGE: "storage", codes.LOW_BATTERY: "low battery",
           codes.WINDOW: "outside update window", codes.BUSY: "busy",
           codes.CRASH_LOOP: "crash loop", codes.NOT_CONFIRMED: "not confirmed in time",
           codes.BAD_MANIFEST: "bad manifest", codes.RUNTIME_ROLLED_BACK: "runtime rolled back",
           codes.OLDER_RELEASE: "older than the node's version (no signed downgrade)",
           codes.NO_MEMORY: "out of memory on the node"}
TARGET_KEYS = ("tags", "board", "provider", "version", "micropython", "nodes")
OPEN_STATES = ("running", "paused")  # a rollout that still offers (or will offer) its release


class RolloutError(ValueError):
    """A rollout cannot be created or changed as asked; the message says why."""


def check_stages(stages) -> list[dict]:
    if not isinstance(stages, list) or not stages:
        raise RolloutError('stages must be a list like [{"percent": 10, "soak": 3600}, ...]')
    last = 0
    out = []
    for s in stages:
        if not isinstance(s, dict) or set(s) - {"percent", "soak"}:
            raise RolloutError('each stage is {"percent": 1..100, "soak": seconds}')
        pct, soak = s.get("percent"), s.get("soak", 0)
        if (isinstance(pct, bool) or not isinstance(pct, int | float) or not last < pct <= 100):
            raise RolloutError(f"stage percents must rise within 1..100, got {pct!r} after {last}")
        if isinstance(soak, bool) or not isinstance(soak, int) or not 0 <= soak <= 30 * 86400:
            raise RolloutError(f"stage soak must be 0..{30 * 86400} seconds, got {soak!r}")
        last = pct
        out.append({"percent": pct, "soak": soak})
    if last != 100:
        raise RolloutError("the last stage must reach 100 %")
    return out


def select_nodes(db, target: dict) -> list[dict]:
    """Nodes matching every given criterion of target (tags: all of them; nodes: explicit ids)."""
    unknown = set(target) - set(TARGET_KEYS)
    if unknown:
        raise RolloutError(f"unknown target key(s) {', '.join(sorted(unknown))}; "
                           f"expected {', '.join(TARGET_KEYS)}")
    ids = target.get("nodes")
    if ids:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise RolloutError("target nodes must be a list of node ids")
        missing = node_store.unknown_ids(db, ids)
        if missing:
            raise RolloutError(f"unknown node(s): {', '.join(missing[:10])}")
    return node_store.select_target(db, target)


def runs_release(n: dict, rel: dict) -> bool:
    """The node's own STATUS says it runs the release: its app version and, for a release that
    carries a runtime image, that image's MicroPython (STATUS field 10, sent after each boot)."""
    rt = rel.get("runtime_micropython")
    return n["firmware_version"] == rel["version"] and (
        rt is None or n["micropython_version"] == rt)


def _not_yet(n: dict, rel: dict) -> str | None:
    """Why a node that confirmed the release is not counted, when its app version is right but
    its MicroPython is not the release's runtime (else None)."""
    rt = rel.get("runtime_micropython")
    if rt is None or n["firmware_version"] != rel["version"] or n["micropython_version"] == rt:
        return None
    runs = n["micropython_version"]
    return (f"confirmed, but its STATUS says MicroPython {runs}, not the release's {rt}" if runs
            else f"confirmed, but it has not said which MicroPython it runs (the release's: {rt})")


def _busy_nodes(db) -> set[str]:
    """Nodes with an update still to come in some unfinished rollout."""
    return ota_store.busy_nodes(db, TERMINAL)


def skipped_text(skipped: dict, version: str) -> str:
    """'1 already in it, 2 already on 0.2.0' for the counts add_nodes() returns."""
    parts = [(skipped.get("already_in"), "already in it"),
             (skipped.get("on_version"), f"already on {version}"),
             (skipped.get("other_rollout"), "in another unfinished rollout"),
             (skipped.get("incompatible"), f"on a board {version} does not support"),
             (skipped.get("untrusted_key"), "not trusting the key that signed it"),
             (skipped.get("newer_version"), f"on a newer version than {version}"),
             (skipped.get("other_org"), "of another organisation than the release's")]
    return ", ".join(f"{n} {text}" for n, text in parts if n)


def create(db, version: str, target: dict, stages=None, max_failures=0.2,
           max_health_drop=0.25, actor=None, now=None) -> int:
    """Start a rollout of release version to the target; return its id."""
    rel = ota_store.get_release(db, version)
    stages = check_stages(stages if stages is not None else DEFAULT_STAGES)
    for name, v in (("max_failures", max_failures), ("max_health_drop", max_health_drop)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            raise RolloutError(f"{name} must be a fraction 0..1, got {v!r}")
    if not isinstance(target, dict) or not any(target.get(k) for k in TARGET_KEYS):
        raise RolloutError("choose the target: tags, board, provider, version, micropython or "
                           "nodes")
    nodes = select_nodes(db, target)
    if not nodes:
        raise RolloutError("the target matches no node")
    foreign = [n["id"] for n in nodes if not _for_node(rel, n)]
    if foreign:  # the platform's scope selects every organisation's nodes
        raise RolloutError(f"other organisation: release {version} is an organisation's own, "
                           f"for its nodes alone; {len(foreign)} target node(s) are not its: "
                           f"{', '.join(foreign[:5])}")
    bad = [n["id"] for n in nodes if n["board"] not in rel["boards"]]
    if bad:
        raise RolloutError(f"incompatible board: {len(bad)} target node(s) are not on a board "
                           f"release {version} supports ({', '.join(rel['boards'])}): "
                           f"{', '.join(bad[:5])}")
    newer = [n for n in nodes if _refuses_as_older(n, rel)]
    if newer:
        runs = sorted({n["firmware_version"] for n in newer}, key=_vkey)
        raise RolloutError(
            f"older release: {len(newer)} target node(s) run a newer version than {version} "
            f"({', '.join(n['id'] for n in newer[:5])}{', ...' if len(newer) > 5 else ''}: "
            f"{', '.join(runs)}), and nodes refuse an older release. To go back, build a signed "
            f"downgrade for the version they run: `fleet release build VERSION --source "
            f"OLD_TREE --downgrade-from {runs[-1]}`"
            + (f" (release {version} is a downgrade from {rel['downgrade_from']} only)"
               if rel.get("downgrade_from") else ""))
    untrusting = _untrusting(db, rel, [n["id"] for n in nodes if not runs_release(n, rel)])
    if untrusting:
        ids = sorted(untrusting)
        trusted = sorted({k for ks in untrusting.values() for k in ks})
        raise RolloutError(
            f"untrusted key: release {version} is signed with key {rel['key_id']}, which "
            f"{len(ids)} target node(s) do not trust ({', '.join(ids[:5])}"
            f"{', ...' if len(ids) > 5 else ''}; they trust {', '.join(trusted)}). Sign a "
            f"release with a key they trust (`fleet release build VERSION --key {trusted[0]}`): "
            f"it carries the fleet's current keys, so after it they trust "
            f"{rel['key_id']} too")
    busy = _busy_nodes(db)
    clash = [n["id"] for n in nodes if n["id"] in busy]
    if clash:
        raise RolloutError(f"{len(clash)} node(s) are in another unfinished rollout: "
                           f"{', '.join(clash[:5])}")
    # A stable shuffle, so the first stage is not always the alphabetically first nodes. A node
    # on the release's app but not (or not known to be) on its runtime is not skipped.
    todo = sorted((n for n in nodes if not runs_release(n, rel)),
                  key=lambda n: hashlib.sha256(n["id"].encode()).digest())
    rows = [(n["id"], -1, "skipped", n["firmware_version"]) for n in nodes
            if runs_release(n, rel)]
    start = 0
    for i, s in enumerate(stages):
        end = max(start + (1 if start < len(todo) else 0),
                  math.ceil(len(todo) * s["percent"] / 100))
        end = min(end, len(todo))
        rows += [(n["id"], i, "pending", n["firmware_version"]) for n in todo[start:end]]
        start = end
    return ota_store.add_rollout(db, version, stages, max_failures, max_health_drop, target, rows,
                                 actor, now)


def _vkey(v) -> tuple:
    """A version as a sortable tuple; () for one that is not MAJOR.MINOR.PATCH."""
    try:
        return tuple(int(x) for x in str(v).split("."))
    except ValueError:
        return ()


def _refuses_as_older(n: dict, rel: dict) -> bool:
    """The node runs a newer version than rel and rel is no downgrade signed for that version,
    so the node's agent would refuse it (reason OLDER_RELEASE, docs/ota.md)."""
    runs = _vkey(n["firmware_version"])
    return (bool(runs) and runs > _vkey(rel["version"])
            and rel.get("downgrade_from") != n["firmware_version"])


def _for_node(rel: dict, n: dict) -> bool:
    """A release goes to the nodes of its organisation, the platform's release to any node."""
    return rel["org_id"] in (PLATFORM_ORG, n["org_id"])


def _untrusting(db, rel: dict, ids: list[str]) -> dict[str, list[str]]:
    """{node: the key ids it trusts} of nodes known not to trust the key that signed rel."""
    return {n: keys for n, keys in identity_store.trusted_key_ids(db, ids).items()
            if keys is not None and rel["key_id"] not in keys}


def add_nodes(db, rid: int, ids: list, actor=None, now=None) -> dict:
    """Add nodes to an unfinished rollout, in its current stage; say what was added and skipped.

    Skipped, each counted: nodes already in this rollout, already on its release, in another
    unfinished rollout, on a board the release does not support, not trusting its key, or on a
    newer version (which would refuse it as older, unless a downgrade signed for that version).
    Unknown ids are an error.
    """
    r = ota_store.get_rollout(db, rid)
    if r["state"] not in OPEN_STATES:
        raise RolloutError(f"rollout {rid} is {r['state']}; nodes can be added only to a "
                           "running or paused rollout")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise RolloutError("nodes must be a non-empty list of node ids")
    ids = list(dict.fromkeys(ids))
    rel = ota_store.get_release(db, r["release"])
    nodes = select_nodes(db, {"nodes": ids})  # raises for unknown ids
    inside = {n["node_id"] for n in ota_store.rollout_nodes(db, rid)}
    busy = _busy_nodes(db)
    skipped = {"already_in": 0, "on_version": 0, "other_rollout": 0, "incompatible": 0,
               "untrusted_key": 0, "newer_version": 0, "other_org": 0}
    untrusting = _untrusting(db, rel, [n["id"] for n in nodes])
    rows = []
    for n in nodes:
        if not _for_node(rel, n):
            skipped["other_org"] += 1
        elif n["id"] in inside:
            skipped["already_in"] += 1
        elif runs_release(n, rel):
            skipped["on_version"] += 1
        elif n["id"] in busy:
            skipped["other_rollout"] += 1
        elif n["board"] not in rel["boards"]:
            skipped["incompatible"] += 1
        elif n["id"] in untrusting:
            skipped["untrusted_key"] += 1
        elif _refuses_as_older(n, rel):
            skipped["newer_version"] += 1
        else:
            rows.append((n["id"], r["stage"], "pending", n["firmware_version"]))
    ota_store.add_rollout_nodes(db, rid, rows, actor, skipped, now)
    return {"added": len(rows), "skipped": skipped}


def act(db, rid: int, action: str, actor=None) -> dict:
    """Operator action: pause, resume, abort or retry (only the failed nodes)."""
    r = ota_store.get_rollout(db, rid)
    state = r["state"]
    if action == "pause":
        if state != "running":
            raise RolloutError(f"rollout {rid} is {state}; only a running one can be paused")
        ota_store.update_rollout(db, rid, actor, "rollout.pause", state="paused",
                                 reason=f"paused by {actor}")
    elif action == "resume":
        if state != "paused":
            raise RolloutError(f"rollout {rid} is {state}; only a paused one can be resumed")
        ota_store.update_rollout(db, rid, actor, "rollout.resume", state="running", reason=None,
                                 stage_started=time.time())
    elif action == "abort":
        if state in ("aborted", "done"):
            raise RolloutError(f"rollout {rid} is already {state}")
        # Nodes in the middle of it are told to stop (the next tick sends OTA_DOWN op 2).
        rows = [("cancel", n["offered_at"], n["progress"], n["reason"], n["attempts"],
                 n["node_id"]) for n in ota_store.rollout_nodes(db, rid) if n["state"] in IN_FLIGHT]
        ota_store.set_rollout_nodes(db, rid, rows)
        ota_store.update_rollout(db, rid, actor, "rollout.abort", state="aborted",
                                 reason=f"aborted by {actor}")
    elif action == "retry":
        if state in ("aborted", "done"):
            raise RolloutError(f"rollout {rid} is {state}; nothing to retry")
        rows = [("pending", None, None, None, n["attempts"], n["node_id"])
                for n in ota_store.rollout_nodes(db, rid)
                if n["state"] in FAILED + ("declined",)]
        ota_store.set_rollout_nodes(db, rid, rows)
        # A rollout paused for failures runs again, the failed nodes offered once more.
        ota_store.update_rollout(db, rid, actor, "rollout.retry", state="running",
                                 reason=f"{len(rows)} failed node(s) retried")
    else:
        raise RolloutError(f"unknown action {action!r}; expected pause, resume, abort or retry")
    return ota_store.get_rollout(db, rid)


def offer_frame(seq: int, version: str, rid: int, url: str | None, op: int = 1) -> bytes:
    body = {"op": op, "version": version, "rid": rid}
    if url:
        body["url"] = url
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.OTA_DOWN, seq & 0xFFFF, body)
    return bytes(buf[:n])


def ota_url(settings) -> str:
    """The base URL nodes fetch update files from (OTA_URL, else this fleet's own web port)."""
    return os.environ.get("OTA_URL") or f"http://127.0.0.1:{settings.port}"


def _bad_health(n, now) -> bool:
    offline = not n["online"] or n["last_seen"] is None or now - n["last_seen"] > 900
    return offline or n["reset_cause"] == 3  # 3: watchdog reset


def tick(db, send, url=None, now=None) -> list[int]:
    """Advance every running rollout once; send(node, frame) delivers a downlink.

    Returns the ids of the rollouts it looked at.
    """
    now = time.time() if now is None else now
    # Every web process of a fleet may run a ticker: a database lock lets one tick at a time,
    # so no node is offered the same stage twice.
    with upkeep_store.exclusive(db, "rollouts") as mine:
        return _tick(db, send, url, now) if mine else []


def _tick(db, send, url, now) -> list[int]:
    seen = []
    for r in ota_store.list_rollouts(db, "running"):
        _tick_one(db, r, send, url, now)
        seen.append(r["id"])
    for r in ota_store.list_rollouts(db, "aborted"):
        _cancel(db, r, send)
    return seen


def _cancel(db, r, send):
    """Send OTA_DOWN op 2 (cancel) to the nodes an abort caught mid-update."""
    todo = [n for n in ota_store.rollout_nodes(db, r["id"], state="cancel") if n["online"]]
    if not todo:
        return
    seqs = command_store.take_down_seqs(db, [n["node_id"] for n in todo])
    rows = []
    for n in todo:
        try:
            send(n["node_id"], offer_frame(seqs[n["node_id"]], r["release"], r["id"], None, op=2))
        except Exception:  # noqa: BLE001, S112 - tried again on the next tick
            continue
        rows.append(("cancelled", n["offered_at"], n["progress"], "rollout aborted",
                     n["attempts"], n["node_id"]))
    ota_store.set_rollout_nodes(db, r["id"], rows)


def _tick_one(db, r, send, url, now):
    rid = r["id"]
    version = r["release"]
    rel = ota_store.get_release(db, version)
    nodes = {n["node_id"]: n for n in ota_store.rollout_nodes(db, rid)}
    changed = {}
    last = r["report_id"]
    for rep in ota_store.ota_reports(db, after_id=r["report_id"], limit=100000):
        last = rep["id"]
        n = nodes.get(rep["node_id"])
        if n is None or (rep["rid"] is not None and rep["rid"] != rid):
            continue
        if rep["version"] != version or n["state"] == "skipped":
            continue
        state = REPORT_STATES.get(rep["state"])
        if state is None:
            continue
        n["state"] = state
        n["progress"] = rep["progress"] if state == "downloading" else n["progress"]
        if rep["reason"] is not None:
            reason = REASONS.get(rep["reason"], f"reason {rep['reason']}")
            n["reason"] = f"{reason}: {rep['text']}" if rep["text"] else reason
        changed[n["node_id"]] = n
    for n in nodes.values():
        # Counted only when the node confirmed AND its own STATUS says it runs the release (with
        # a runtime image: also that MicroPython; the boot STATUS naming it is delivered before
        # the agent confirms).
        if n["state"] != "confirmed":
            continue
        if runs_release(n, rel):
            n["state"] = "succeeded"
            changed[n["node_id"]] = n
        else:
            why = _not_yet(n, rel)
            if why and n["reason"] != why:
                n["reason"] = why
                changed[n["node_id"]] = n
    for n in nodes.values():
        if (n["state"] in ("rebooting", "confirmed") and n["node_id"] not in changed
                and (n["updated"] or now) < now - STUCK_AFTER):
            minutes = STUCK_AFTER // 60
            n["reason"] = (
                f"said it reboots into {version}, then no confirmed boot for {minutes} min"
                if n["state"] == "rebooting" else
                f"{n['reason'] or f'confirmed, but its STATUS never showed {version}'} "
                f"(for {minutes} min)")
            n["state"] = "failed"
            changed[n["node_id"]] = n
    stage = r["stage"]
    reached = [n for n in nodes.values() if 0 <= n["stage"] <= stage]
    to_offer = [n for n in reached if n["online"] and (
        n["state"] == "pending"
        or (n["state"] in IN_FLIGHT
            and max(n["offered_at"] or 0, n["updated"] or 0) < now - REOFFER_AFTER))]
    if to_offer:
        seqs = command_store.take_down_seqs(db, [n["node_id"] for n in to_offer])
        for n in to_offer:
            try:
                send(n["node_id"], offer_frame(seqs[n["node_id"]], version, rid, url))
            except Exception as e:  # noqa: BLE001 - one unreachable broker call must not stop all
                n["reason"] = f"offer not sent: {e}"
                changed[n["node_id"]] = n
                continue
            n["state"] = "offered"
            n["offered_at"] = now
            n["attempts"] += 1
            changed[n["node_id"]] = n
    ota_store.set_rollout_nodes(db, rid, [
        (n["state"], n["offered_at"], n["progress"], n["reason"], n["attempts"], n["node_id"])
        for n in changed.values()])
    fields = {"report_id": last}
    failed = [n for n in reached if n["state"] in FAILED]
    if reached and len(failed) / len(reached) > r["max_failures"]:
        fields.update(state="paused", reason=(
            f"stage {stage + 1}: {len(failed)} of {len(reached)} nodes failed "
            f"(threshold {r['max_failures']:.0%}): "
            + "; ".join(f"{n['node_id']} {n['reason'] or n['state']}" for n in failed[:3])))
        ota_store.update_rollout(db, rid, "rollouts", "rollout.auto-pause", **fields)
        return
    updated = [n for n in nodes.values() if n["state"] == "succeeded"]
    others = [n for n in nodes.values() if n["state"] in ("pending",) and n["stage"] > stage]
    if len(updated) >= HEALTH_MIN_UPDATED and others:
        bad_u = sum(_bad_health(n, now) for n in updated) / len(updated)
        bad_o = sum(_bad_health(n, now) for n in others) / len(others)
        if bad_u - bad_o > r["max_health_drop"]:
            fields.update(state="paused", reason=(
                f"health regression: {bad_u:.0%} of updated nodes offline or reset by the "
                f"watchdog, against {bad_o:.0%} of nodes not yet updated"))
            ota_store.update_rollout(db, rid, "rollouts", "rollout.auto-pause", **fields)
            return
    soak = r["stages"][stage]["soak"]
    done = all(n["state"] in TERMINAL for n in reached)
    if done and now - (r["stage_started"] or now) >= soak:
        if stage + 1 < len(r["stages"]):
            fields.update(stage=stage + 1, stage_started=now)
            ota_store.update_rollout(db, rid, "rollouts", "rollout.stage", **fields)
            return
        fields.update(state="done", reason=None)
        ota_store.update_rollout(db, rid, "rollouts", "rollout.done", **fields)
        return
    ota_store.update_rollout(db, rid, **fields)


def summary(db, rid: int) -> dict:
    """A rollout with per-stage counts, for the API and the UI."""
    r = ota_store.get_rollout(db, rid)
    counts = ota_store.rollout_counts(db, rid)
    r["stage_counts"] = [counts.get(i, {}) for i in range(len(r["stages"]))]
    r["skipped"] = counts.get(-1, {}).get("skipped", 0)
    totals: dict = {}
    for c in counts.values():
        for k, v in c.items():
            totals[k] = totals.get(k, 0) + v
    r["totals"] = totals
    return r


class Publisher:
    """One MQTT connection for all offers of a tick (nodes/commands.py: one per command)."""

    def __init__(self, settings):
        self.settings = settings
        self.client = None

    def __call__(self, node_id: str, frame: bytes) -> None:
        if self.client is None:
            host, port, user, password = self.settings.mqtt_login("fleet")
            c = mqtt.client(user=user, password=password)
            c.connect(host, port, keepalive=30)
            c.loop_start()
            self.client = c
        try:
            mqtt.publish_acked(self.client, topics.down(node_id), frame)
        except mqtt.NotAcknowledged:
            raise OSError("the broker did not acknowledge the offer") from None

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


class Ticker:
    """Runs tick() every `every` seconds in a thread of `fleet run`."""

    def __init__(self, settings, every: float = 5.0):
        self.settings = settings
        self.every = every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rollouts", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(self.every):
            pub = Publisher(self.settings)
            db = connect(self.settings.db_path)
            try:
                tick(db, pub, ota_url(self.settings))
            except Exception as e:  # noqa: BLE001 - a bad tick must not end the rollouts thread
                self.errors += 1
                print(f"rollouts: tick failed: {e}", flush=True)
            finally:
                pub.close()
                db.conn.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(15)
