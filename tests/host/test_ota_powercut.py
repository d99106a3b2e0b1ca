"""Power cut at every flash write of an update: the node always boots a whole version.

The real agent (polylink/ota/agent.py, slots.py, store.py) runs on CPython against the in-memory
HTTP server of the firmware tests; every write, rename, remove and mkdir is a step, and the power is
cut at step k (a write cut halfway), for every k. Then boot.py's logic picks the slot, and the
app it picks must match its manifest file for file; an update started again must then finish.
"""

import asyncio
import binascii
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
from _fw import FakeHAL, FakeHTTP, board  # noqa: E402
from polylink import store  # noqa: E402
from polylink.ota import agent as ota  # noqa: E402
from polylink.ota import slots  # noqa: E402

REL = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "ota_v1.json").read_text())[
    "release"]


class PowerCut(BaseException):
    """The power went off (BaseException: nothing in the firmware may catch it)."""


class Flash:
    """Counts the flash-changing steps; at step `cut` the power goes off."""

    def __init__(self, cut=None):
        self.cut = cut
        self.steps = 0

    def step(self):
        self.steps += 1
        if self.cut is not None and self.steps >= self.cut:
            raise PowerCut(self.steps)


def install(monkeypatch, flash):
    real_open = open

    class File:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            if flash.cut is not None and flash.steps + 1 >= flash.cut:
                self.f.write(b[: len(b) // 2])  # half of it reached the flash
                self.f.flush()
            flash.step()
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fopen(path, mode="r", *a, **kw):
        if any(c in mode for c in "wa"):
            flash.step()
            return File(real_open(path, mode, *a, **kw))
        return real_open(path, mode, *a, **kw)

    class OS:
        def __getattr__(self, name):
            return getattr(os, name)

        def rename(self, a, b):
            flash.step()
            os.rename(a, b)

        def remove(self, p):
            flash.step()
            os.remove(p)

        def mkdir(self, p):
            flash.step()
            os.mkdir(p)

    for mod in (ota, slots, store):
        monkeypatch.setattr(mod, "os", OS(), raising=False)
        monkeypatch.setattr(mod, "open", fopen, raising=False)
    # json.dump writes through the File wrapper, so partial pointer files are simulated too.


def sha(b):
    return binascii.hexlify(hashlib.sha256(b).digest()).decode()


FACTORY = {"polylink/same.txt": b"unchanged\n" * 10, "polylink/app.txt": b"old app\n"}


def factory(root: Path):
    for p, b in FACTORY.items():
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b)
    (root / "manifest.json").write_text(json.dumps({"format": 1, "version": "0.1.0", "files": [
        {"path": p, "sha256": sha(b), "size": len(b)} for p, b in FACTORY.items()]}))


def whole_version(root: Path) -> str:
    """Boot as boot.py does; return the version that runs, or fail if its files are not whole."""
    d = Path(slots.boot(str(root)))
    m = json.loads((d / "manifest.json").read_text())
    for f in m["files"]:
        data = (d / f["path"]).read_bytes()
        assert sha(data) == f["sha256"] and len(data) == f["size"], f"{f['path']} is not whole"
    return m["version"]


class Cfg:
    node = "n-1"
    mqtt_user = None

    def __init__(self):
        self.board = dict(board(), name="ESP32_GENERIC")
        self.ota = {"keys": REL["keys"], "url": "http://fleet", "window": None,
                    "min_battery": None, "check": 0, "confirm": 1, "ca": None}


class Node:
    def __init__(self, root):
        self.hal = FakeHAL(str(root), board())
        self.hal.http = server()
        self.cfg = Cfg()
        self.fw = "0.1.0"
        self.reports = []

    def emit(self, mtype, body, ts=None):
        self.reports.append(body)

    def request_reboot(self):
        pass


def server():
    files = {"/ota/v1/releases/0.2.0/manifest.json": REL["manifest"].encode(),
             "/ota/v1/releases/0.2.0/manifest.sig": REL["sig"].encode()}
    for h, text in REL["files"].items():
        files["/ota/v1/files/" + h] = text.encode()
    return FakeHTTP(files)


def update(root, flash):
    node = Node(root)
    try:
        asyncio.run(ota.Agent(node).update("0.2.0", 1))
    except PowerCut:
        return None
    return node.reports[-1]


def test_power_cut_at_every_step_leaves_a_whole_version(tmp_path, monkeypatch):
    flash = Flash()
    install(monkeypatch, flash)
    root = tmp_path / "dry"
    root.mkdir()
    factory(root)
    assert update(root, flash)["state"] == ota.REBOOTING
    total = flash.steps
    assert total > 15, f"only {total} steps: the harness is not seeing the writes"
    seen = set()
    for k in range(1, total + 1):
        root = tmp_path / f"cut{k}"
        root.mkdir()
        factory(root)
        flash.cut, flash.steps = k, 0
        assert update(root, flash) is None, f"step {k} was not reached"
        flash.cut = None
        v = whole_version(root)  # the power comes back: boot
        seen.add(v)
        if v == "0.2.0":
            continue  # switched: it boots the new version on trial (test_slots covers the rest)
        # The update is offered again and completes from whatever the cut left behind.
        last = update(root, flash)
        assert last["state"] == ota.REBOOTING, (k, last)
        assert whole_version(root) == "0.2.0", k
    assert seen == {"0.1.0", "0.2.0"}, "cuts before the switch keep 0.1.0, after it run 0.2.0"


@pytest.mark.parametrize("at", ["pointer"])
def test_a_torn_pointer_write_keeps_the_old_pointer(tmp_path, monkeypatch, at):
    root = tmp_path
    factory(root)
    slots.switch(str(root), "", "0.1.0", None)  # a pointer exists
    (root / "slot.tmp").write_text('{"active": "a", "tri')  # a cut while writing the next one
    assert whole_version(root) == "0.1.0"


# --- the MicroPython runtime image (esp32.Partition simulation) ---------------------------------

RT = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "runtime_v1.json").read_text())


def _ota_board():
    return json.loads((Path(__file__).resolve().parents[2] / "boards" /
                       "ESP32_GENERIC_OTA.json").read_text())


def rt_node(root, fl):
    import base64

    from polylink_host import esp32sim

    node = Node(root)
    node.cfg.board = _ota_board()
    node.cfg.ota["keys"] = RT["release"]["keys"]
    node.hal.flash = fl
    files = {"/ota/v1/releases/0.3.0/manifest.json": RT["release"]["manifest"].encode(),
             "/ota/v1/releases/0.3.0/manifest.sig": RT["release"]["sig"].encode()}
    for h, text in RT["release"]["files"].items():
        files["/ota/v1/files/" + h] = text.encode()
    image = base64.b64decode(RT["image"])
    files["/ota/v1/files/" + sha(image)] = image
    node.hal.http = FakeHTTP(files)
    assert esp32sim  # the partition class comes from node.hal.partition()
    return node


def rt_flash(root):
    """A simulated chip as esptool left it: a valid MicroPython 1.24.1 in ota_0, otadata blank."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vectors"))
    from make_runtime_vectors import app_image
    from polylink_host import esp32sim

    fl = esp32sim.Flash(str(root), _ota_board())
    fl.bootloader()
    P = esp32sim.partition_class(fl)
    data = app_image("esp32", "1.24.1", 30000)
    buf = bytearray(4096)
    for i in range(0, len(data), 4096):
        chunk = data[i:i + 4096]
        buf[:] = chunk + b"\xff" * (4096 - len(chunk))
        P(P.RUNNING).writeblocks(i // 4096, buf)
    return fl


def rt_update(root, fl):
    node = rt_node(root, fl)
    try:
        asyncio.run(ota.Agent(node).update("0.3.0", 1))
    except PowerCut:
        return None
    return node.reports[-1]


def rt_boot(root, fl):
    """Power back: the bootloader picks the runtime, boot.py the app; the agent's first check.

    Returns (app version, runtime label). Fails unless the runtime that boots is a valid image
    and the app that boots is whole. REVERTS counts the boots where the app had to follow.
    """
    from polylink.ota import runtime
    from polylink_host import esp32sim

    fl.bootloader()
    esp32sim.validate(fl, fl.running, "esp32")  # raises unless bootable
    st = slots.read(str(root))
    if st["trial"] and st.get("runtime") and st["runtime"] != fl.running:
        # after_boot(): the runtime the trial app expects did not boot, so the app goes back too.
        node = rt_node(root, fl)
        assert runtime.running_label(node.hal) == fl.running
        slots.revert(str(root), ota.RUNTIME_ROLLED_BACK)
        REVERTS.append(1)
    return whole_version(root), fl.running


REVERTS: list = []


def test_power_cut_at_every_runtime_update_step_leaves_a_bootable_runtime(tmp_path, monkeypatch):
    from polylink.ota import runtime
    from polylink_host import esp32sim

    flash = Flash()
    install(monkeypatch, flash)
    monkeypatch.setattr(runtime, "os", ota.os, raising=False)  # the harness's counting os
    monkeypatch.setattr(runtime, "open", ota.open, raising=False)
    # Partition writes and otadata updates are steps too (the simulation's own files are not
    # torn: a cut falls before or after each flash operation, as on the chip).
    monkeypatch.setattr(esp32sim.Flash, "step", lambda self: flash.step())
    root = tmp_path / "dry"
    root.mkdir()
    factory(root)
    fl = rt_flash(root)
    flash.steps = 0
    assert rt_update(root, fl)["state"] == ota.REBOOTING
    total = flash.steps
    assert total > 30, f"only {total} steps: the harness is not seeing the writes"
    seen = set()
    for k in range(1, total + 1):
        root = tmp_path / f"cut{k}"
        root.mkdir()
        factory(root)
        flash.cut, flash.steps = None, 0
        fl = rt_flash(root)
        flash.cut, flash.steps = k, 0
        assert rt_update(root, fl) is None, f"step {k} was not reached"
        flash.cut = None
        version, label = rt_boot(root, fl)
        seen.add((version, label))
        # set_boot() is the update's last flash write: any cut leaves the old runtime and app.
        assert (version, label) == ("0.1.0", "ota_0"), (k, version, label)
        last = rt_update(root, fl)  # offered again: completes from what the cut left
        assert last["state"] == ota.REBOOTING, (k, last)
        assert rt_boot(root, fl) == ("0.3.0", "ota_1"), k
    assert seen == {("0.1.0", "ota_0")}, seen
    # The cuts between the pointer switch and set_boot() (the pointer's rename, which a node
    # without a pointer yet reads from slot.tmp, and set_boot itself): the trial app went back.
    assert len(REVERTS) == 2, REVERTS
