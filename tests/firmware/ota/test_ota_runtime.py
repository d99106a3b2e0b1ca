"""OTA of the MicroPython runtime image: the esp32.Partition simulation against the documented
behaviour, and the agent streaming, verifying, switching and confirming (CPython and wasm)."""

import binascii
import hashlib
import json

from _check import eq, raises
from _fw import FakeHAL, FakeHTTP, boards_dir, rmtree, tmpdir, vectors
from polylink import proto
from polylink.ota import agent as ota
from polylink.ota import runtime, slots
from polylink_host import esp32sim

V = vectors("runtime_v1.json")
REL = V["release"]
IMAGE = binascii.a2b_base64(V["image"].encode())
S3_IMAGE = binascii.a2b_base64(V["s3_image"].encode())
IMAGE_SHA = binascii.hexlify(hashlib.sha256(IMAGE).digest()).decode()
RT_PATH = "/ota/v1/files/" + IMAGE_SHA


def _board(name="ESP32_GENERIC_OTA"):
    with open(boards_dir() + "/" + name + ".json") as f:
        return json.load(f)


def _flash(root, name="ESP32_GENERIC_OTA"):
    """A simulated chip that esptool flashed: a valid runtime in the app that boots first."""
    fl = esp32sim.Flash(root, _board(name))
    fl.bootloader()
    P = esp32sim.partition_class(fl)
    first = P(P.RUNNING)
    _write(first, _image("1.24.1"), bytearray(4096))
    fl.writes = 0
    return fl, P


def _image(version):
    # The vector image with another banner: what esptool wrote at the factory (the simulated
    # bootloader, like the real one with secure boot off, does not re-validate it at boot).
    return IMAGE.replace(b"MicroPython v1.25.0", b"MicroPython v" + version.encode())


def _write(part, data, buf):
    for i in range(0, len(data), 4096):
        chunk = data[i:i + 4096]
        for j in range(4096):
            buf[j] = chunk[j] if j < len(chunk) else 0xFF
        part.writeblocks(i // 4096, buf)


def test_partition_simulation_follows_the_documented_block_protocol():
    root = tmpdir("part")
    try:
        fl, P = _flash(root)
        run = P(P.RUNNING)
        eq(run.info(), (P.TYPE_APP, 0x10, 65536, 1572864, "ota_0", False), "info()")
        eq([p.info()[4] for p in P.find()], ["ota_0", "ota_1"], "find() lists app partitions")
        eq([p.info()[4] for p in P.find(P.TYPE_DATA, label="vfs")], ["vfs"], "find vfs")
        raises(OSError, P, "nope")
        nxt = run.get_next_update()
        eq(nxt.info()[4], "ota_1", "next update after ota_0")
        eq(nxt.get_next_update().info()[4], "ota_0", "and after ota_1")
        eq((nxt.ioctl(4, 0), nxt.ioctl(5, 0), nxt.ioctl(1, 0)), (384, 4096, 0), "ioctl")
        buf = bytearray(4096)
        nxt.readblocks(3, buf)
        eq(bytes(buf[:4]), b"\xff" * 4, "never written: erased")
        nxt.writeblocks(3, bytearray(b"\x0f" * 4096))
        nxt.writeblocks(3, b"\xf0\xff", 10)  # extended form: no erase, bits only cleared
        nxt.readblocks(3, buf)
        eq(bytes(buf[9:13]), b"\x0f\x00\x0f\x0f", "NOR programming ANDs")
        nxt.writeblocks(3, bytearray(b"\xaa" * 4096))  # simple form erases first
        nxt.readblocks(3, buf)
        eq(bytes(buf[9:12]), b"\xaa\xaa\xaa", "erase then write")
        nxt.ioctl(6, 3)
        nxt.readblocks(3, buf, 100)
        eq(bytes(buf[:2]), b"\xff\xff", "ioctl 6 erased the block")
        raises(OSError, nxt.writeblocks, 0, b"\x00" * 100)  # not whole sectors
        raises(OSError, nxt.readblocks, 384, buf)  # past the end
        e = raises(OSError, nxt.set_boot)  # garbage is not bootable
        eq(e.args[0], -0x1503, "ESP_ERR_OTA_VALIDATE_FAILED")
        eq(P(P.BOOT).info()[4], "ota_0", "boot partition unchanged")
        P.mark_app_valid_cancel_rollback()  # fine on an app esptool wrote
        flat, Pf = _flash(tmpdir("part"), "ESP32_GENERIC")
        eq(Pf(Pf.RUNNING).info()[4], "factory", "factory layout")
        raises(OSError, Pf(Pf.RUNNING).get_next_update)
        rmtree(flat.dir.rsplit("/", 1)[0])
    finally:
        rmtree(root)


def test_new_runtime_boots_pending_and_rolls_back_unless_marked_valid():
    root = tmpdir("part")
    try:
        fl, P = _flash(root)
        nxt = P(P.RUNNING).get_next_update()
        _write(nxt, IMAGE, bytearray(4096))
        nxt.set_boot()
        eq((P(P.BOOT).info()[4], P(P.RUNNING).info()[4]), ("ota_1", "ota_0"), "set, not booted")
        fl.bootloader()
        eq((P(P.RUNNING).info()[4], fl.state("ota_1")), ("ota_1", esp32sim.PENDING_VERIFY),
           "first boot: pending verify")
        fl.bootloader()  # a reset before mark_app_valid_cancel_rollback()
        eq((P(P.RUNNING).info()[4], fl.state("ota_1")), ("ota_0", esp32sim.ABORTED),
           "rolled back")
        nxt.set_boot()
        fl.bootloader()
        P.mark_app_valid_cancel_rollback()
        eq(fl.state("ota_1"), esp32sim.VALID, "confirmed")
        fl.bootloader()
        eq(P(P.RUNNING).info()[4], "ota_1", "stays after a reset")
        wrong = P(P.RUNNING).get_next_update()
        _write(wrong, S3_IMAGE, bytearray(4096))
        e = raises(OSError, wrong.set_boot)
        eq("chip id 9" in str(e), True, str(e))
    finally:
        rmtree(root)


class _Cfg:
    def __init__(self):
        self.node = "n-1"
        self.mqtt_user = None
        self.board = _board()
        self.ota = {"keys": REL["keys"], "url": "http://fleet:8000", "window": None,
                    "min_battery": None, "check": 0, "confirm": 1, "ca": None}


class _Node:
    def __init__(self, root):
        self.hal = FakeHAL(root, _board())
        self.hal.flash, self.P = _flash(root)
        self.cfg = _Cfg()
        self.fw = "0.2.0"
        self.sent = []
        self.reboots = 0

    def emit(self, mtype, body, ts=None):
        eq(mtype, proto.OTA_UP, "reports are OTA_UP")
        proto.encode(bytearray(proto.MAX_FRAME), mtype, 1, body)
        self.sent.append(body)

    def request_reboot(self):
        self.reboots += 1

    def states(self):
        return [b["state"] for b in self.sent]


def _server():
    files = {"/ota/v1/releases/0.3.0/manifest.json": REL["manifest"].encode(),
             "/ota/v1/releases/0.3.0/manifest.sig": REL["sig"].encode(), RT_PATH: IMAGE}
    for sha in REL["files"]:
        files["/ota/v1/files/" + sha] = REL["files"][sha].encode()
    return FakeHTTP(files)


async def _fast(agent_coro):
    sleep = ota.asyncio.sleep

    async def fast(s):
        await sleep(0)

    ota.asyncio.sleep = fast
    runtime.asyncio.sleep = fast
    try:
        await agent_coro
    finally:
        ota.asyncio.sleep = sleep
        runtime.asyncio.sleep = sleep


async def test_agent_streams_the_runtime_verifies_it_and_sets_boot_after_the_app():
    root = tmpdir("rt")
    try:
        node = _Node(root)
        node.hal.http = _server()
        await ota.Agent(node).update("0.3.0", 9)
        st = node.states()
        eq(st[-2:], [ota.VERIFIED, ota.REBOOTING], "ends like an app update")
        eq([b["progress"] for b in node.sent if b["state"] == ota.DOWNLOADING][-1], 100, "100 %")
        p = slots.read(root)
        eq((p["active"], p["trial"], p["version"], p["runtime"]), ("a", 1, "0.3.0", "ota_1"),
           "pointer names the app slot and the runtime partition")
        P = node.P
        eq(P(P.BOOT).info()[4], "ota_1", "set_boot")
        eq(P(P.RUNNING).info()[4], "ota_0", "still running the old runtime")
        eq(runtime.readback_sha(P("ota_1"), len(IMAGE), bytearray(4096)), IMAGE_SHA, "image")
        eq(node.reboots, 1, "reboot requested")
    finally:
        rmtree(root)


async def test_runtime_download_resumes_where_the_connection_was_cut():
    root = tmpdir("rt")
    try:
        node = _Node(root)
        srv = _server()
        srv.cut[RT_PATH] = 30000
        node.hal.http = srv
        await _fast(ota.Agent(node).update("0.3.0", None))
        eq([r[1] for r in srv.requests if r[0] == RT_PATH], [0, 30000], "resumed at the cut")
        eq(node.states()[-1], ota.REBOOTING, "completed")
        P = node.P
        eq(runtime.readback_sha(P("ota_1"), len(IMAGE), bytearray(4096)), IMAGE_SHA, "whole")
    finally:
        rmtree(root)


async def test_runtime_resumes_after_a_reboot_from_its_progress_record():
    root = tmpdir("rt")
    try:
        node = _Node(root)
        srv = _server()
        srv.cut[RT_PATH] = 70000  # past block 16: a progress record was written
        node.hal.http = srv
        agent = ota.Agent(node)
        sleep = runtime.asyncio.sleep

        async def reboot(s):
            raise OSError("power went off")  # no retry in this boot: the next boot resumes

        runtime.asyncio.sleep = reboot
        try:
            await agent.update("0.3.0", None)
        finally:
            runtime.asyncio.sleep = sleep
        eq(node.states()[-1], ota.FAILED, "this attempt ended")
        await ota.Agent(node).update("0.3.0", None)
        eq([r[1] for r in srv.requests if r[0] == RT_PATH], [0, 65536], "resumed at 64 KB")
        eq(node.states()[-1], ota.REBOOTING, "completed")
    finally:
        rmtree(root)


async def test_corrupted_runtime_is_refused_before_set_boot():
    root = tmpdir("rt")
    try:
        node = _Node(root)
        srv = _server()
        srv.corrupt.add(RT_PATH)
        node.hal.http = srv
        await ota.Agent(node).update("0.3.0", 3)
        last = node.sent[-1]
        eq((last["state"], last["reason"]), (ota.FAILED, ota.HASH_MISMATCH), last.get("text"))
        P = node.P
        eq(P(P.BOOT).info()[4], "ota_0", "otadata untouched")
        eq(slots.read(root)["active"], "", "app pointer untouched")
        eq(node.reboots, 0, "no reboot")
    finally:
        rmtree(root)


async def test_runtime_of_the_running_version_is_not_fetched():
    root = tmpdir("rt")
    try:
        node = _Node(root)
        node.hal.mpy_version = lambda: (1, 25, 0)
        node.hal.http = _server()
        await ota.Agent(node).update("0.3.0", None)
        eq(RT_PATH in [r[0] for r in node.hal.http.requests], False, "not downloaded")
        eq(slots.read(root).get("runtime"), None, "app-only switch")
        eq(node.P(node.P.BOOT).info()[4], "ota_0", "otadata untouched")
    finally:
        rmtree(root)


async def test_same_app_version_offered_again_still_brings_its_runtime():
    """A node on the release's app but an older MicroPython (its runtime part failed before, or
    it was flashed with the app only) updates the runtime instead of saying it is done."""
    for running, last in (((1, 24, 1), ota.REBOOTING), ((1, 25, 0), ota.CONFIRMED)):
        root = tmpdir("rt")
        try:
            node = _Node(root)
            node.fw = "0.3.0"
            node.hal.mpy_version = lambda running=running: running
            node.hal.http = _server()
            await _fast(ota.Agent(node).update("0.3.0", 2))
            eq(node.states()[-1], last, str(node.sent[-1]))
            fetched = [r[0] for r in node.hal.http.requests]
            if last == ota.CONFIRMED:
                eq(node.states(), [ota.CONFIRMED], "nothing else to do")
                eq([f for f in fetched if "/files/" in f], [], "only the manifest was read")
                eq(slots.read(root)["active"], "", "nothing switched")
            else:
                eq(RT_PATH in fetched, True, "the runtime image was fetched")
                eq(node.P(node.P.BOOT).info()[4], "ota_1", "and set to boot")
            import os

            eq([n for n in os.listdir(root) if n.startswith("offer")], [], "no leftovers")
        finally:
            rmtree(root)


def test_manifest_runtime_entry_checks():
    m = json.loads(REL["manifest"])
    ota.check_manifest(m, "k1", "0.3.0", "ESP32_GENERIC_OTA", (1, 20, 0), "esp32")  # needs 1.25
    e = raises(ota.OTAError, ota.check_manifest, m, "k1", "0.3.0", "ESP32_GENERIC_OTA",
               (1, 24, 1), "esp32s3")
    eq(e.reason, ota.BOARD, str(e))
    m["runtime"]["size"] = "big"
    e = raises(ota.OTAError, ota.check_manifest, m, "k1", "0.3.0", "ESP32_GENERIC_OTA",
               (1, 24, 1), "esp32")
    eq(e.reason, ota.BAD_MANIFEST, str(e))


class _Flag:
    def __init__(self, v):
        self.v = v

    def is_set(self):
        return self.v


class _Link:
    def __init__(self, up):
        self.up = _Flag(up)


class _Store:
    count = 0


async def _updated_then_rebooted(root, healthy, resets_before=0):
    node = _Node(root)
    node.hal.http = _server()
    await ota.Agent(node).update("0.3.0", 4)
    for _ in range(1 + resets_before):
        node.hal.flash.bootloader()  # the reset(s)
        slots.boot(root)
    node.fw = "0.3.0"
    node.link = _Link(healthy)
    node.store = _Store()
    node.sent = 1 if healthy else 0
    reports = []
    node.emit = lambda mtype, body, ts=None: reports.append(body)
    agent = ota.Agent(node)
    import asyncio

    task = asyncio.create_task(agent.after_boot())
    await asyncio.sleep(0)
    node.hal.now += 10000
    await task
    return node, reports


async def test_healthy_new_runtime_is_confirmed_with_mark_app_valid():
    root = tmpdir("rt")
    try:
        node, reports = await _updated_then_rebooted(root, True)
        eq(reports, [{"state": ota.CONFIRMED, "version": "0.3.0", "rid": 4, "keys": "k1"}],
           "confirmed")
        fl = node.hal.flash
        eq((fl.running, fl.state("ota_1")), ("ota_1", esp32sim.VALID), "runtime valid")
        eq(slots.read(root)["trial"], 0, "app kept")
        fl.bootloader()
        eq(fl.running, "ota_1", "no rollback at the next reset")
    finally:
        rmtree(root)


async def test_unconfirmed_runtime_rolls_back_with_the_app():
    root = tmpdir("rt")
    try:
        node, reports = await _updated_then_rebooted(root, False)
        eq(reports, [], "nothing confirmed")
        eq(node.hal.resets, 1, "reset to revert")
        fl = node.hal.flash
        fl.bootloader()
        eq(fl.running, "ota_0", "the bootloader brought the old runtime back")
        st = slots.read(root)
        eq((st["active"], st["rolled_back"]["reason"]), ("", slots.NOT_CONFIRMED), "app too")
    finally:
        rmtree(root)


async def test_a_reset_before_confirming_reverts_the_app_that_needs_the_runtime():
    root = tmpdir("rt")
    try:
        node, reports = await _updated_then_rebooted(root, True, resets_before=1)
        eq(node.hal.flash.running, "ota_0", "bootloader rolled the runtime back")
        eq(reports, [], "not confirmed")
        eq(node.hal.resets, 1, "reset after the revert")
        st = slots.read(root)
        eq((st["active"], st["rolled_back"]["reason"]), ("", ota.RUNTIME_ROLLED_BACK), "why")
    finally:
        rmtree(root)
