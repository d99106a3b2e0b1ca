"""Rollback protection on the node: an older signed release is refused unless an operator signed
it as a downgrade from exactly the version the node confirmed (also wasm)."""

import json

from _check import eq, raises
from _fw import FakeHAL, FakeHTTP, board, rmtree, tmpdir, vectors
from polylink import proto
from polylink.ota import agent as ota
from polylink.ota import slots

V = vectors("ota_v1.json")
REL = V["release"]
DOWN = V["downgrade"]


class _Cfg:
    def __init__(self, keys):
        self.node = "n-1"
        self.board = dict(board())
        self.board["name"] = "ESP32_GENERIC"
        self.ota = {"keys": keys, "url": "http://fleet:8000", "window": None, "min_battery": None,
                    "check": 0, "confirm": 1, "ca": None}


class _Node:
    def __init__(self, root, fw):
        self.hal = FakeHAL(root, board())
        self.cfg = _Cfg(dict(REL["keys"]))
        self.fw = fw
        self.sent = []
        self.reboots = 0

    def emit(self, mtype, body, ts=None):
        buf = bytearray(proto.MAX_FRAME)
        proto.encode(buf, mtype, 1, body)  # every report must encode
        self.sent.append(body)

    def request_reboot(self):
        self.reboots += 1


def _server(manifest, sig):
    files = {"/ota/v1/releases/0.2.0/manifest.json": manifest.encode(),
             "/ota/v1/releases/0.2.0/manifest.sig": sig.encode()}
    for sha in REL["files"]:
        files["/ota/v1/files/" + sha] = REL["files"][sha].encode()
    return FakeHTTP(files)


def _confirmed(root, version):
    """A node that updated to version and confirmed it (slot b, no trial)."""
    ota._makedirs(root + "/b")
    with open(root + "/b/manifest.json", "w") as f:
        json.dump({"format": 1, "version": version, "files": []}, f)
    slots.switch(root, "b", version, 9)
    slots.boot(root)
    slots.confirm(root)


async def _offer(root, fw, manifest, sig):
    node = _Node(root, fw)
    node.hal.http = _server(manifest, sig)
    await ota.Agent(node).update("0.2.0", 6)
    return node


def test_older_manifest_refused_unless_signed_as_a_downgrade_from_the_floor():
    m = json.loads(REL["manifest"])
    args = ("k1", "0.2.0", "ESP32_GENERIC", (1, 24, 1))
    eq(len(ota.check_manifest(m, *args, floor="0.1.0")), 2, "newer than the floor")
    eq(len(ota.check_manifest(m, *args, floor="0.2.0")), 2, "the floor itself")
    for floor in ("0.3.0", "0.10.0", "1.0.0"):
        e = raises(ota.OTAError, ota.check_manifest, m, *args, floor=floor)
        eq(e.reason, ota.OLDER_RELEASE, str(e))
    d = json.loads(DOWN["from_0_3_0"])
    eq(d["downgrade_from"], "0.3.0", "vector")
    eq(len(ota.check_manifest(d, *args, floor="0.3.0")), 2, "signed downgrade from 0.3.0")
    for floor in ("0.3.1", "0.4.0"):
        e = raises(ota.OTAError, ota.check_manifest, d, *args, floor=floor)
        eq(e.reason, ota.OLDER_RELEASE, "a downgrade only from exactly its version")


def test_the_floor_is_the_last_confirmed_version_and_survives_a_revert():
    root = tmpdir("floor")
    try:
        eq(slots.floor(slots.read(root), "0.1.0"), "0.1.0", "factory: its own version")
        _confirmed(root, "0.3.0")
        eq(slots.floor(slots.read(root), "x"), "0.3.0", "confirmed")
        slots.switch(root, "a", "0.4.0", 10)
        eq(slots.read(root)["floor"], "0.3.0", "not raised by a trial")
        slots.revert(root, slots.NOT_CONFIRMED)
        eq(slots.read(root)["floor"], "0.3.0", "kept by a revert")
        slots.switch(root, "a", "0.4.0", 11)
        slots.undo_switch(root)
        eq(slots.read(root)["floor"], "0.3.0", "kept by an undone switch")
    finally:
        rmtree(root)


async def test_agent_refuses_an_older_signed_release_and_changes_nothing():
    root = tmpdir("rollback")
    try:
        _confirmed(root, "0.3.0")
        before = slots.read(root)
        node = await _offer(root, "0.3.0", REL["manifest"], REL["sig"])
        last = node.sent[-1]
        eq((last["state"], last["reason"]), (ota.FAILED, ota.OLDER_RELEASE), last.get("text"))
        eq("older than 0.3.0" in last["text"], True, last["text"])
        fetched = [r for r in node.hal.http.requests if r[0].startswith("/ota/v1/files/")]
        eq(fetched, [], "no file fetched")
        eq(slots.read(root), before, "pointer unchanged")
        eq(node.reboots, 0, "no reboot")
    finally:
        rmtree(root)


async def test_agent_refuses_it_even_when_running_the_older_version_after_a_revert():
    # A node back on 0.3.0 after 0.4.0 failed is still at floor 0.3.0.
    root = tmpdir("rollback")
    try:
        _confirmed(root, "0.3.0")
        slots.switch(root, "a", "0.4.0", 10)
        slots.revert(root, slots.NOT_CONFIRMED)
        node = await _offer(root, "0.3.0", REL["manifest"], REL["sig"])
        eq(node.sent[-1]["reason"], ota.OLDER_RELEASE, str(node.sent[-1]))
    finally:
        rmtree(root)


async def test_agent_takes_a_signed_downgrade_from_its_version_only():
    for floor, ok in (("0.3.0", True), ("0.4.0", False)):
        root = tmpdir("downgrade")
        try:
            _confirmed(root, floor)
            node = await _offer(root, floor, DOWN["from_0_3_0"], DOWN["from_0_3_0_sig"])
            if not ok:
                eq(node.sent[-1]["reason"], ota.OLDER_RELEASE, "signed for 0.3.0, not " + floor)
                continue
            eq(node.sent[-1]["state"], ota.REBOOTING, str(node.sent[-1]))
            st = slots.read(root)
            eq((st["version"], st["trial"], st["floor"]), ("0.2.0", 1, floor), "on trial")
            slots.confirm(root)
            eq(slots.read(root)["floor"], "0.2.0", "a confirmed downgrade lowers the floor")
        finally:
            rmtree(root)
