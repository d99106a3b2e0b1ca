"""OTA on the node: ECDSA verification, manifests, slots and the agent's staging (also wasm)."""

import binascii
import json
import os

from _check import eq, raises
from _fw import FakeHAL, FakeHTTP, board, rmtree, tmpdir, vectors
from polylink import proto
from polylink.ota import agent as ota
from polylink.ota import ecdsa, slots

V = vectors("ota_v1.json")
REL = V["release"]


def test_ecdsa_vectors_made_by_cryptography_verify_here():
    for i, c in enumerate(V["ecdsa"]):
        pub = binascii.unhexlify(c["public"])
        msg = binascii.unhexlify(c["msg"])
        sig = binascii.unhexlify(c["sig"])
        if c["valid"]:
            ecdsa.verify(pub, msg, sig)
        else:
            raises(ecdsa.SignatureError, ecdsa.verify, pub, msg, sig)
        eq(c["valid"] in (True, False), True, "case %d" % i)


def test_ecdsa_refuses_malformed_keys_and_signatures():
    pub = binascii.unhexlify(V["ecdsa"][0]["public"])
    e = raises(ecdsa.SignatureError, ecdsa.public_key, pub[:64])
    eq("65 bytes" in str(e), True, str(e))
    off = bytearray(pub)
    off[64] ^= 1
    e = raises(ecdsa.SignatureError, ecdsa.public_key, bytes(off))
    eq("not a point" in str(e), True, str(e))
    raises(ecdsa.SignatureError, ecdsa.verify, pub, b"", b"\x00" * 64)  # r = 0
    raises(ecdsa.SignatureError, ecdsa.verify, pub, b"", b"\x01" * 63)


def _digest(text):
    import hashlib

    return hashlib.sha256(text.encode()).digest()


def test_manifest_signature_key_rotation_and_unknown_keys():
    keys = REL["keys"]
    d = _digest(REL["manifest"])
    eq(ota.check_signature(keys, d, REL["sig"]), "k1", "signed by k1")
    e = raises(ota.OTAError, ota.check_signature, {"k2": keys["k2"]}, d, REL["sig"])
    eq(e.reason, ota.UNKNOWN_KEY, str(e))
    e = raises(ota.OTAError, ota.check_signature, keys, d, REL["sig_by_k2_named_k1"])
    eq(e.reason, ota.BAD_SIGNATURE, str(e))
    e = raises(ota.OTAError, ota.check_signature, keys, _digest(REL["manifest"] + " "), REL["sig"])
    eq(e.reason, ota.BAD_SIGNATURE, str(e))


def test_manifest_checks_board_micropython_and_paths():
    m = json.loads(REL["manifest"])
    files = ota.check_manifest(m, "k1", "0.2.0", "ESP32_GENERIC", (1, 24, 1))
    eq(len(files), 2, "files")
    e = raises(ota.OTAError, ota.check_manifest, m, "k1", "0.2.0", "HELTEC_V3", (1, 24, 1))
    eq(e.reason, ota.BOARD, str(e))
    e = raises(ota.OTAError, ota.check_manifest, m, "k1", "0.2.0", "ESP32_GENERIC", (1, 20, 0))
    eq(e.reason, ota.MICROPYTHON, str(e))
    e = raises(ota.OTAError, ota.check_manifest, m, "k1", "0.3.0", "ESP32_GENERIC", (1, 24, 1))
    eq(e.reason, ota.BAD_MANIFEST, str(e))
    for bad in ("../boot.py", "/main.py", "manifest.json", "a b"):
        m2 = json.loads(REL["manifest"])
        m2["files"][0]["path"] = bad
        e = raises(ota.OTAError, ota.check_manifest, m2, "k1", "0.2.0", "ESP32_GENERIC",
                   (1, 24, 1))
        eq(e.reason, ota.BAD_MANIFEST, bad)


def test_manifest_key_sets_are_checked():
    rot = V["rotation"]
    m = json.loads(rot["to_k2"])
    eq(len(ota.check_manifest(m, "k1", "0.2.0", "ESP32_GENERIC", (1, 24, 1))), 2, "good key set")
    pub = REL["keys"]["k2"]
    many = {}
    for i in range(ota.MAX_KEYS + 1):
        many["k%d" % i] = pub
    for bad in ({}, [pub], many, {"k2": pub[:-2]}, {"k2": "05" + pub[2:]},
                {"k2": pub.upper()}, {"": pub}, {"k2": 5}):
        m2 = json.loads(rot["to_k2"])
        m2["keys"] = bad
        e = raises(ota.OTAError, ota.check_manifest, m2, "k1", "0.2.0", "ESP32_GENERIC",
                   (1, 24, 1))
        eq(e.reason, ota.BAD_MANIFEST, str(bad)[:40])
    eq(ota.key_ids({"k2": pub, "a-1": pub}), "a-1,k2", "ids as OTA_UP carries them")


DAY = 1767225600  # 2026-01-01 00:00 UTC


def _at(h, m=0):
    return DAY + h * 3600 + m * 60


def test_window_wraps_midnight():
    eq(ota.in_window(None, None), True, "no window")
    eq(ota.in_window([1, 5], 3 * 3600), True, "03:00 in 1-5")
    eq(ota.in_window([1, 5], 6 * 3600), False, "06:00")
    eq(ota.in_window([22, 4], 23 * 3600), True, "23:00 in 22-4")
    eq(ota.in_window([22, 4], 12 * 3600), False, "12:00 in 22-4")
    eq(ota.in_window([1, 5], None), False, "no clock")


def test_window_edges_from_inclusive_to_exclusive_also_across_midnight():
    for w, h, m, want in (
        ([1, 5], 1, 0, True), ([1, 5], 0, 59, False), ([1, 5], 4, 59, True),
        ([1, 5], 5, 0, False),
        ([22, 4], 22, 0, True), ([22, 4], 21, 59, False), ([22, 4], 0, 0, True),
        ([22, 4], 3, 59, True), ([22, 4], 4, 0, False), ([23, 0], 23, 30, True),
        ([23, 0], 0, 0, False), ([0, 24], 0, 0, True), ([0, 24], 23, 59, True),
        ([9, 17], 17, 0, False),
    ):
        eq(ota.in_window(w, _at(h, m)), want, "%r at %02d:%02d" % (w, h, m))
        eq(ota.in_window(w, _at(h, m) + 86400 * 40), want, "the same 40 days later")


def test_config_refuses_an_empty_or_malformed_window():
    from polylink import configschema

    board_ = board()
    base = {"node": "n-1", "mqtt": {"host": "h"}}
    for w in ([5, 5], [0, 0], [1], [24, 2], [3, 25], "22-4"):
        e = raises(configschema.ConfigError, configschema.validate, dict(base, ota={"window": w}),
                   board_)
        eq("ota.window" in str(e), True, str(e))
    eq(configschema.validate(dict(base, ota={"window": [22, 4]}), board_).ota["window"], [22, 4],
       "wrapping window accepted")


class _Stop(Exception):
    """Ends a test's wait."""


async def _deferred_update(node, clock, on_sleep):
    """Run an update with the agent's sleeps counted and on_sleep(n) run at the n-th one."""
    node.hal.time = lambda: clock[0]
    seen = []
    real = ota.asyncio.sleep

    async def sleep(s):
        seen.append((s, len(node.hal.http.requests)))
        on_sleep(len(seen))
        await real(0)

    ota.asyncio.sleep = sleep
    try:
        await ota.Agent(node).update("0.2.0", 5)
    finally:
        ota.asyncio.sleep = real
    return seen


async def test_agent_defers_outside_the_window_and_starts_when_it_opens():
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        node.hal.http = _server()
        node.cfg.ota["window"] = [22, 4]
        clock = [_at(12)]

        def evening(n):
            if n == 3:
                clock[0] = _at(22, 0)

        seen = await _deferred_update(node, clock, evening)
        first = node.sent[0]
        eq((first["state"], first["reason"], first["text"]),
           (ota.DEFERRED, ota.WINDOW, "waits for 22-04 UTC"), "deferred at noon")
        eq([n for _, n in seen], [0, 0, 0], "no request while outside the window")
        eq(seen[0][0] > 0, True, "it sleeps between looks at the clock")
        eq(node.states()[1:2], [ota.OFFERED], "offered once the window opened")
        eq(node.states()[-1], ota.REBOOTING, "and the update ran")
    finally:
        rmtree(root)


async def test_agent_inside_a_window_across_midnight_does_not_wait():
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        node.hal.http = _server()
        node.cfg.ota["window"] = [22, 4]
        seen = await _deferred_update(node, [_at(3, 30)], lambda n: None)
        eq(seen, [], "never slept")
        eq(ota.DEFERRED in node.states(), False, "not deferred at 03:30")
        eq(node.states()[-1], ota.REBOOTING, "updated")
    finally:
        rmtree(root)


async def test_agent_without_a_clock_waits_for_one():
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        node.hal.http = _server()
        node.cfg.ota["window"] = [1, 5]

        def give_up(n):
            if n == 5:
                raise _Stop()

        try:
            await _deferred_update(node, [None], give_up)
        except _Stop:
            pass
        else:
            raise AssertionError("the agent did not wait for the clock")
        eq(node.states(), [ota.DEFERRED], "deferred, nothing else")
        eq(node.hal.http.requests, [], "nothing fetched")
    finally:
        rmtree(root)


def _app(root, name, version, files):
    d = slots.slot_dir(root, name)
    entries = []
    for path in files:
        p = d + "/" + path
        ota._makedirs(p.rsplit("/", 1)[0])
        with open(p, "wb") as f:
            f.write(files[path])
        import hashlib

        entries.append({"path": path, "size": len(files[path]),
                        "sha256": binascii.hexlify(hashlib.sha256(files[path]).digest()).decode()})
    with open(d + "/manifest.json", "w") as f:
        json.dump({"format": 1, "version": version, "files": entries}, f)


def test_slot_switch_trial_confirm_and_crash_loop_revert():
    root = tmpdir("slots")
    try:
        eq(slots.boot(root), root, "no pointer: the factory app")
        _app(root, "a", "0.2.0", {"polylink/x.txt": b"a"})
        slots.switch(root, "a", "0.2.0", 7)
        eq(slots.read(root)["trial"], 1, "on trial")
        eq(slots.boot(root), root + "/a", "boots the new slot")
        slots.confirm(root)
        for _ in range(5):
            eq(slots.boot(root), root + "/a", "confirmed: stays")
        eq(slots.inactive(slots.read(root)), "b", "next update goes to b")
        _app(root, "b", "0.3.0", {"polylink/x.txt": b"b"})
        slots.switch(root, "b", "0.3.0", 8)
        for i in range(slots.MAX_TRIAL_BOOTS):
            eq(slots.boot(root), root + "/b", "trial boot %d" % (i + 1))
        eq(slots.boot(root), root + "/a", "one boot too many: back to a")
        st = slots.read(root)
        eq((st["version"], st["trial"]), ("0.2.0", 0), "state after revert")
        eq(st["rolled_back"], {"version": "0.3.0", "reason": slots.CRASH_LOOP}, "reported")
        slots.clear_rolled_back(root)
        eq(slots.read(root)["rolled_back"], None, "cleared")
    finally:
        rmtree(root)


def test_pointer_left_as_tmp_by_a_fat_rename_is_still_read():
    root = tmpdir("slots")
    try:
        _app(root, "a", "0.2.0", {"polylink/x.txt": b"a"})
        slots.switch(root, "a", "0.2.0", 1)
        os.rename(root + "/slot", root + "/slot.tmp")
        eq(slots.boot(root), root + "/a", "read from slot.tmp")
    finally:
        rmtree(root)


class _Cfg:
    def __init__(self, keys, board_name="ESP32_GENERIC"):
        self.node = "n-1"
        self.board = dict(board())
        self.board["name"] = board_name
        self.ota = {"keys": keys, "url": "http://fleet:8000", "window": None, "min_battery": None,
                    "check": 0, "confirm": 1, "ca": None}


class _Node:
    def __init__(self, root, keys, board_name="ESP32_GENERIC"):
        self.hal = FakeHAL(root, board())
        self.cfg = _Cfg(keys, board_name)
        self.fw = "0.1.0"
        self.sent = []
        self.reboots = 0

    def emit(self, mtype, body, ts=None):
        eq(mtype, proto.OTA_UP, "reports are OTA_UP")
        buf = bytearray(proto.MAX_FRAME)
        proto.encode(buf, mtype, 1, body)  # every report must encode
        self.sent.append(body)

    def request_reboot(self):
        self.reboots += 1

    def states(self):
        return [b["state"] for b in self.sent]


def _server(sig=None, manifest=None):
    files = {"/ota/v1/releases/0.2.0/manifest.json": (manifest or REL["manifest"]).encode(),
             "/ota/v1/releases/0.2.0/manifest.sig": (sig or REL["sig"]).encode()}
    for sha in REL["files"]:
        files["/ota/v1/files/" + sha] = REL["files"][sha].encode()
    return FakeHTTP(files)


def _same_sha():
    for sha in REL["files"]:
        if REL["files"][sha].startswith("unchanged"):
            return sha


async def test_agent_stages_verifies_and_switches():
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        node.hal.http = _server()
        agent = ota.Agent(node)
        await agent.update("0.2.0", 5)
        st = node.states()
        eq(st[0], ota.OFFERED, "first report")
        eq(st[-3:], [ota.DOWNLOADING, ota.VERIFIED, ota.REBOOTING], "last reports")
        eq(node.reboots, 1, "reboot requested")
        p = slots.read(root)
        eq((p["active"], p["trial"], p["version"], p["rid"]), ("a", 1, "0.2.0", 5), "pointer")
        with open(root + "/a/polylink/app.txt") as f:
            eq(f.read(), "new app\n" * 40, "staged file")
        eq(ota.load_manifest(root + "/a")["version"], "0.2.0", "manifest in the slot")
    finally:
        rmtree(root)


async def test_agent_copies_files_it_holds_and_downloads_only_the_rest():
    root = tmpdir("agent")
    try:
        _app(root, "", "0.1.0", {"polylink/same.txt": b"unchanged\n" * 10,
                                 "polylink/app.txt": b"old app\n"})
        node = _Node(root, REL["keys"])
        node.hal.http = _server()
        await ota.Agent(node).update("0.2.0", None)
        paths = [r[0] for r in node.hal.http.requests]
        eq("/ota/v1/files/" + _same_sha() in paths, False, "unchanged file not downloaded")
        eq(len([p for p in paths if p.startswith("/ota/v1/files/")]), 1, "one file fetched")
        eq(slots.read(root)["active"], "a", "switched")
    finally:
        rmtree(root)


async def test_agent_resumes_a_cut_download_with_range():
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        srv = _server()
        for sha in REL["files"]:
            srv.cut["/ota/v1/files/" + sha] = 50
        node.hal.http = srv
        agent = ota.Agent(node)
        agent_sleep = ota.asyncio.sleep

        async def fast(s):
            await agent_sleep(0)

        ota.asyncio.sleep = fast
        try:
            await agent.update("0.2.0", None)
        finally:
            ota.asyncio.sleep = agent_sleep
        starts = [r[1] for r in srv.requests if r[0].startswith("/ota/v1/files/")]
        eq(sorted(starts), [0, 0, 50, 50], "each file: from 0, cut at 50, resumed at 50")
        eq(node.states()[-1], ota.REBOOTING, "completed")
        eq(ota.hash_file(root + "/a/polylink/app.txt", bytearray(64)),
           [s for s in REL["files"] if REL["files"][s].startswith("new")][0], "whole file")
    finally:
        rmtree(root)


async def test_agent_refuses_a_corrupted_file_and_changes_nothing():
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        srv = _server()
        srv.corrupt.add("/ota/v1/files/" + _same_sha())
        node.hal.http = srv
        await ota.Agent(node).update("0.2.0", 3)
        last = node.sent[-1]
        eq((last["state"], last["reason"]), (ota.FAILED, ota.HASH_MISMATCH), "failed: hash")
        eq(slots.read(root)["active"], "", "still the factory app")
        eq(node.reboots, 0, "no reboot")
    finally:
        rmtree(root)


async def test_agent_reports_an_update_that_ran_out_of_heap_and_changes_nothing():
    # Found on the Unix port: a MemoryError while staging killed the update task unreported.
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        node.hal.http = _server()
        agent = ota.Agent(node)

        async def stage(*args):
            raise MemoryError("memory allocation failed, allocating 944 bytes")

        agent.stage = stage
        await agent.update("0.2.0", 4)
        last = node.sent[-1]
        eq((last["state"], last["reason"]), (ota.FAILED, ota.NO_MEMORY), "failed: no memory")
        eq(last["text"].startswith("MemoryError"), True, last["text"])
        eq(slots.read(root)["active"], "", "still the factory app")
    finally:
        rmtree(root)


async def test_agent_refuses_unknown_key_bad_signature_and_wrong_board():
    for keys, sig, board_name, reason in (
        ({"k2": REL["keys"]["k2"]}, None, "ESP32_GENERIC", ota.UNKNOWN_KEY),
        (REL["keys"], REL["sig_by_k2_named_k1"], "ESP32_GENERIC", ota.BAD_SIGNATURE),
        (REL["keys"], None, "HELTEC_V3", ota.BOARD),
    ):
        root = tmpdir("agent")
        try:
            node = _Node(root, keys, board_name)
            node.hal.http = _server(sig=sig)
            await ota.Agent(node).update("0.2.0", None)
            last = node.sent[-1]
            eq((last["state"], last["reason"]), (ota.FAILED, reason), last.get("text"))
            fetched = [r for r in node.hal.http.requests if r[0].startswith("/ota/v1/files/")]
            eq(fetched, [], "no file fetched before the manifest is trusted")
            eq(slots.read(root)["active"], "", "nothing switched")
        finally:
            rmtree(root)


async def test_agent_declines_on_low_battery_and_during_a_trial():
    root = tmpdir("agent")
    try:
        node = _Node(root, REL["keys"])
        node.cfg.board["battery"] = {"adc_pin": 35, "divider": 2.0}
        node.cfg.ota["min_battery"] = 3.5
        node.hal.adc = {35: 1650000}  # 3.30 V behind the divider
        await ota.Agent(node).update("0.2.0", None)
        eq((node.sent[-1]["state"], node.sent[-1]["reason"]), (ota.DECLINED, ota.LOW_BATTERY),
           "low battery")
        eq("3.30 V" in node.sent[-1]["text"], True, node.sent[-1]["text"])
        _app(root, "a", "0.2.0", {"polylink/x.txt": b"a"})
        slots.switch(root, "a", "0.2.0", 1)
        node.cfg.ota["min_battery"] = None
        await ota.Agent(node).update("0.3.0", None)
        eq((node.sent[-1]["state"], node.sent[-1]["reason"]), (ota.DECLINED, ota.BUSY), "trial")
    finally:
        rmtree(root)


class _Up:
    def __init__(self, up):
        self.up = _Flag(up)


class _Flag:
    def __init__(self, v):
        self.v = v

    def is_set(self):
        return self.v


class _Store:
    count = 0


async def _after_boot(root, link_up):
    _app(root, "a", "0.2.0", {"polylink/x.txt": b"a"})
    slots.switch(root, "a", "0.2.0", 4)
    slots.boot(root)
    node = _Node(root, REL["keys"])
    node.fw = "0.2.0"
    node.link = _Up(link_up)
    node.store = _Store()
    node.sent = 1 if link_up else 0  # frames acknowledged since boot
    agent = ota.Agent(node)
    reports = []
    node.emit = lambda mtype, body, ts=None: reports.append(body)
    import asyncio

    task = asyncio.create_task(agent.after_boot())
    await asyncio.sleep(0)  # it took its start time
    node.hal.now += 10000  # ten seconds into the trial (confirm is 1 s in _Cfg)
    await task
    return node, reports


async def test_trial_version_confirms_once_healthy():
    root = tmpdir("trial")
    try:
        node, reports = await _after_boot(root, True)
        eq(reports, [{"state": ota.CONFIRMED, "version": "0.2.0", "rid": 4, "keys": "k1,k2"}],
           "confirmed, with the keys the node trusts")
        eq(slots.read(root)["trial"], 0, "kept")
        eq(node.hal.resets, 0, "no reset")
    finally:
        rmtree(root)


async def test_trial_version_never_healthy_is_reverted():
    root = tmpdir("trial")
    try:
        node, reports = await _after_boot(root, False)
        eq(reports, [], "nothing to confirm")
        eq(node.hal.resets, 1, "reset to revert")
        st = slots.read(root)
        eq((st["active"], st["trial"]), ("", 0), "back on the factory app")
        eq(st["rolled_back"], {"version": "0.2.0", "reason": slots.NOT_CONFIRMED}, "why")
    finally:
        rmtree(root)


async def test_agent_downloads_a_file_whose_local_copy_no_longer_matches_its_manifest():
    root = tmpdir("agent")
    try:
        # The factory manifest says the node holds same.txt, but the file was changed by hand.
        _app(root, "", "0.1.0", {"polylink/same.txt": b"unchanged\n" * 10})
        with open(root + "/polylink/same.txt", "wb") as f:
            f.write(b"deployed by hand\n")
        node = _Node(root, REL["keys"])
        node.hal.http = _server()
        await ota.Agent(node).update("0.2.0", None)
        paths = [r[0] for r in node.hal.http.requests]
        eq("/ota/v1/files/" + _same_sha() in paths, True, "fetched instead of copied")
        eq(node.states()[-1], ota.REBOOTING, "the update went on")
        with open(root + "/a/polylink/same.txt", "rb") as f:
            eq(f.read(), b"unchanged\n" * 10, "the release's file")
    finally:
        rmtree(root)


def _config_keys(root):
    with open(root + "/config.json") as f:
        return json.load(f)["ota"]["keys"]


async def _boot_trial(root, keys, healthy):
    """The reboot into the trial version: after_boot() until it confirms or reverts."""
    import asyncio

    slots.boot(root)
    node = _Node(root, keys)
    node.fw = "0.2.0"
    node.link = _Up(healthy)
    node.store = _Store()
    node.sent = 1 if healthy else 0
    reports = []
    node.emit = lambda mtype, body, ts=None: reports.append(body)
    task = asyncio.create_task(ota.Agent(node).after_boot())
    await asyncio.sleep(0)
    node.hal.now += 10000
    await task
    return node, reports


async def test_keys_rotate_over_the_air_once_the_release_proved_healthy():
    rot = V["rotation"]
    k1 = {"k1": REL["keys"]["k1"]}
    for healthy in (False, True):
        root = tmpdir("rotate")
        try:
            with open(root + "/config.json", "w") as f:
                json.dump({"node": "n-1", "ota": {"keys": k1, "url": "http://fleet:8000"}}, f)
            node = _Node(root, dict(k1))
            node.hal.http = _server(sig=rot["to_k2_sig"], manifest=rot["to_k2"])
            await ota.Agent(node).update("0.2.0", 3)
            eq(node.states()[-1], ota.REBOOTING, str(node.sent[-1]))
            eq(_config_keys(root), k1, "nothing changes before the new version proved healthy")
            node, reports = await _boot_trial(root, dict(k1), healthy)
            if not healthy:
                eq(reports, [], "not confirmed")
                eq(node.hal.resets, 1, "reverted")
                eq(_config_keys(root), k1, "a release that did not prove healthy changes no key")
                continue
            eq(reports, [{"state": ota.CONFIRMED, "version": "0.2.0", "rid": 3, "keys": "k2"}],
               "confirmed; the node says which keys it trusts now")
            eq(_config_keys(root), {"k2": REL["keys"]["k2"]}, "k1 retired, k2 trusted, in flash")
            eq(node.cfg.ota["keys"], {"k2": REL["keys"]["k2"]}, "and in the running agent")
            # A second confirm (a power cut between keys and slot) changes nothing.
            ota.Agent(node).adopt_keys(root + "/a")
            eq(_config_keys(root), {"k2": REL["keys"]["k2"]}, "idempotent")
        finally:
            rmtree(root)


async def test_after_rotation_only_the_new_key_is_trusted():
    rot = V["rotation"]
    k2 = {"k2": REL["keys"]["k2"]}
    for manifest, sig, last in ((REL["manifest"], REL["sig"], ota.FAILED),
                                (rot["by_k2"], rot["by_k2_sig"], ota.REBOOTING)):
        root = tmpdir("rotated")
        try:
            node = _Node(root, dict(k2))
            node.hal.http = _server(sig=sig, manifest=manifest)
            await ota.Agent(node).update("0.2.0", None)
            eq(node.sent[-1]["state"], last, str(node.sent[-1]))
            if last == ota.FAILED:
                eq(node.sent[-1]["reason"], ota.UNKNOWN_KEY, "k1 is no longer trusted")
        finally:
            rmtree(root)


def test_report_text_is_cut_to_80_bytes_not_80_characters():
    root = tmpdir("clip")
    try:
        node = _Node(root, REL["keys"])
        agent = ota.Agent(node)
        agent.report(ota.FAILED, "0.2.0", text="é" * 60)  # 120 bytes: the codec refuses > 80
        eq(node.sent[-1]["text"], "é" * 40, "cut at 80 bytes")
    finally:
        rmtree(root)
