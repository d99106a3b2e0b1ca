"""A SIMULATION of MicroPython's esp32.Partition and the ESP-IDF app rollback, for the host port
and the firmware tests (CPython and wasm MicroPython: this file keeps to MicroPython's subset).

No ESP32 flash exists here. What it imitates, from docs.micropython.org (library/esp32.html,
"Flash partitions") and ESP-IDF's OTA guide (app rollback, CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE,
which MicroPython's ports/esp32/boards/sdkconfig.base turns on):

- Partition(id, block_size=4096): id a label or BOOT / RUNNING; an unknown label is OSError(ENOENT).
- Partition.find(type=TYPE_APP, subtype=0xff, label=None, block_size=4096), info() as the 6-tuple
  (type, subtype, addr, size, label, encrypted).
- readblocks / writeblocks / ioctl: the block protocol of os.AbstractBlockDev. writeblocks(n, buf)
  (simple) erases the blocks it covers first; writeblocks(n, buf, offset) (extended) does not, so
  like NOR flash it can only clear bits (old & new); ioctl(6, n) erases block n to 0xFF.
- get_next_update(): the next OTA app slot after this partition (factory -> ota_0 -> ota_1 ->
  ota_0); OSError(ENOENT) on a layout without OTA slots.
- set_boot(): validates the image as esp_ota_set_boot_partition does (magic 0xE9, chip id of the
  extended header, segments, checksum, appended SHA-256) and raises OSError(-0x1503)
  (ESP_ERR_OTA_VALIDATE_FAILED) if it is not bootable; else otadata names it, state NEW.
- Flash.bootloader() is what the second-stage bootloader does at every reset: a NEW image becomes
  PENDING_VERIFY and boots; an image still PENDING_VERIFY at the next reset becomes ABORTED and
  the previous app boots again (the rollback).
- mark_app_valid_cancel_rollback(): the running PENDING_VERIFY image becomes VALID.

Limits of the simulation: block_size must be 4096; otadata is one JSON file replaced by a rename
(ESP-IDF's two otadata sectors with sequence numbers give the same old-or-new outcome on a power
cut); encrypted is always False. Partition contents live in <root>/.esp32/<label>.bin, grown on
first write (unwritten bytes read as erased 0xFF).
"""

import hashlib
import json
import os

TYPE_APP = 0
TYPE_DATA = 1
BOOT = 0
RUNNING = 1
BLOCK = 4096
SUBTYPES = {"factory": 0x00, "ota_0": 0x10, "ota_1": 0x11, "ota": 0x00, "phy": 0x01,
            "nvs": 0x02, "fat": 0x81, "spiffs": 0x82}
# esp_ota_img_states_t
NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_NOT_FOUND = 0x105  # mark_app_valid without rollback support: OSError(-261)
_ENOENT = 2
_CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12,
             "esp32c6": 13, "esp32h2": 16}


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


class Flash:
    """The simulated chip: its partition table (from a board file), otadata, the running app."""

    def __init__(self, root, board, rollback=True):
        self.dir = root + "/.esp32"
        self.chip = board.get("chip", "esp32")
        self.rollback = rollback
        self.table = []
        for p in board.get("partitions", ()):
            t = TYPE_APP if p["type"] == "app" else TYPE_DATA
            self.table.append((t, SUBTYPES.get(p["subtype"], 0xFF), p["offset"], p["size"],
                               p["name"]))
        self.running = None
        self.writes = 0  # flash-changing calls, for tests that cut the power between them
        self.cut_at = None
        # bootloader() is the power-on: call it once before using the partitions, and again
        # at every reset.

    # -- power cuts for tests: the cut_at-th flash-changing call raises before it writes
    def step(self):
        self.writes += 1
        if self.cut_at is not None and self.writes >= self.cut_at:
            raise PowerCut(self.writes)

    # -- otadata
    def _otadata_path(self):
        return self.dir + "/otadata.json"

    def otadata(self):
        try:
            with open(self._otadata_path()) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # erased: the factory app (or ota_0) boots

    def _write_otadata(self, d):
        self.step()
        try:
            os.mkdir(self.dir)
        except OSError:
            pass
        tmp = self._otadata_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(d, f)
        try:
            os.remove(self._otadata_path())
        except OSError:
            pass
        os.rename(tmp, self._otadata_path())

    def apps(self):
        return [e for e in self.table if e[0] == TYPE_APP]

    def entry(self, label):
        for e in self.table:
            if e[4] == label:
                return e
        return None

    def _first_app(self):
        apps = self.apps()
        for e in apps:
            if e[1] == SUBTYPES["factory"]:
                return e[4]
        return apps[0][4] if apps else None

    def bootloader(self):
        """A reset: choose the app to run, rolling back an image that never confirmed."""
        d = self.otadata()
        if d is None:
            self.running = self._first_app()
            return self.running
        if d["state"] == NEW:
            d["state"] = PENDING_VERIFY
            self._write_otadata(d)
        elif d["state"] == PENDING_VERIFY and self.rollback:
            # Never confirmed: aborted, and the app that ran before boots again.
            d = {"boot": d["prev"], "prev": d["prev"], "state": VALID, "aborted": d["boot"]}
            self._write_otadata(d)
        self.running = d["boot"]
        return self.running

    def boot_label(self):
        d = self.otadata()
        return d["boot"] if d else self._first_app()

    def state(self, label):
        """The esp_ota_img_states_t of the app in label (VALID for one esptool wrote)."""
        d = self.otadata()
        if d and d["boot"] == label:
            return d["state"]
        if d and d.get("aborted") == label:
            return ABORTED
        return VALID

    # -- contents
    def path(self, label):
        return self.dir + "/" + label + ".bin"

    def read(self, label, offset, buf):
        n = len(buf)
        got = 0
        try:
            with open(self.path(label), "rb") as f:
                f.seek(offset)
                got = f.readinto(buf) or 0
        except OSError:
            pass
        for i in range(got, n):
            buf[i] = 0xFF

    def write(self, label, offset, data, erase):
        """Program data at offset; erase: the covered bytes are erased (0xFF) first."""
        self.step()
        if erase:
            old = data  # erased bytes are all ones: programming leaves exactly data
        else:
            old = bytearray(len(data))
            self.read(label, offset, old)
            for i in range(len(data)):
                old[i] &= data[i]  # NOR flash: programming only clears bits
        try:
            os.mkdir(self.dir)
        except OSError:
            pass
        p = self.path(label)
        if not _exists(p):
            with open(p, "wb"):
                pass
        with open(p, "r+b") as f:
            f.seek(0, 2)
            end = f.tell()
            if end < offset:
                pad = bytearray(BLOCK)
                for i in range(BLOCK):
                    pad[i] = 0xFF
                while end < offset:
                    k = min(BLOCK, offset - end)
                    f.write(memoryview(pad)[:k])
                    end += k
            f.seek(offset)
            f.write(old)

    def erase(self, label, offset, n):
        self.write(label, offset, b"\xff" * n, True)


class PowerCut(BaseException):
    """The simulated power went off (BaseException: firmware code must not catch it)."""


def validate(flash, label, chip):
    """Raise OSError(-0x1503) unless partition label holds a bootable app image for chip."""
    size = flash.entry(label)[3]
    hdr = bytearray(24)
    flash.read(label, 0, hdr)

    def bad(why):
        raise OSError(-ESP_ERR_OTA_VALIDATE_FAILED, "image in %s: %s" % (label, why))

    if hdr[0] != 0xE9:
        bad("magic 0x%02x, not 0xE9" % hdr[0])
    cid = hdr[12] | (hdr[13] << 8)
    if cid != _CHIP_IDS.get(chip, -1):
        bad("chip id %d, this chip is %s" % (cid, chip))
    pos = 24
    csum = 0xEF
    seg = bytearray(8)
    buf = bytearray(BLOCK)
    for _ in range(hdr[1]):
        flash.read(label, pos, seg)
        n = seg[4] | (seg[5] << 8) | (seg[6] << 16) | (seg[7] << 24)
        pos += 8
        if pos + n > size:
            bad("segment runs past the partition")
        left = n
        while left:
            k = min(left, BLOCK)
            mv = memoryview(buf)[:k]
            flash.read(label, pos, mv)
            for b in mv:
                csum ^= b
            pos += k
            left -= k
    pos = (pos + 16) & ~15  # the checksum is the last byte of the 16-byte aligned end
    one = bytearray(1)
    flash.read(label, pos - 1, one)
    if one[0] != csum:
        bad("checksum 0x%02x, computed 0x%02x" % (one[0], csum))
    if hdr[23] == 1:
        h = hashlib.sha256()
        done = 0
        while done < pos:
            k = min(BLOCK, pos - done)
            mv = memoryview(buf)[:k]
            flash.read(label, done, mv)
            h.update(mv)
            done += k
        digest = bytearray(32)
        flash.read(label, pos, digest)
        if bytes(digest) != h.digest():
            bad("appended SHA-256 does not match")


class _Partition:
    """esp32.Partition over a Flash (subclassed per flash by partition_class())."""

    TYPE_APP = TYPE_APP
    TYPE_DATA = TYPE_DATA
    BOOT = BOOT
    RUNNING = RUNNING
    _flash = None

    def __init__(self, id, block_size=4096):
        if block_size != BLOCK:
            raise ValueError("the simulation supports block_size 4096 only")
        fl = self._flash
        if id == BOOT:
            label = fl.boot_label()
        elif id == RUNNING:
            label = fl.running
        elif isinstance(id, int):
            raise ValueError("id must be a label, BOOT or RUNNING")
        else:
            label = id
        e = fl.entry(label) if label else None
        if e is None:
            raise OSError(_ENOENT)
        self._e = e

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        return [cls(e[4], block_size) for e in cls._flash.table
                if e[0] == type and (subtype == 0xFF or e[1] == subtype)
                and (label is None or e[4] == label)]

    def info(self):
        e = self._e
        return (e[0], e[1], e[2], e[3], e[4], False)

    def __repr__(self):
        e = self._e
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % e

    def _check(self, block, n, offset=0):
        start = block * BLOCK + offset
        if block < 0 or offset < 0 or start + n > self._e[3]:
            raise OSError(-0x102)  # ESP_ERR_INVALID_ARG, as esp_partition_read/write answer
        return start

    def readblocks(self, block, buf, offset=0):
        self._flash.read(self._e[4], self._check(block, len(buf), offset), buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            if len(buf) % BLOCK:
                raise OSError(-0x102)  # erase works on whole 4 KB sectors
            self._flash.write(self._e[4], self._check(block, len(buf)), buf, True)
        else:
            self._flash.write(self._e[4], self._check(block, len(buf), offset), buf, False)

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):  # init, deinit, sync
            return 0
        if cmd == 4:
            return self._e[3] // BLOCK
        if cmd == 5:
            return BLOCK
        if cmd == 6:
            self._flash.erase(self._e[4], self._check(arg, BLOCK), BLOCK)
            return 0
        return None

    def get_next_update(self):
        fl = self._flash
        ota = [e for e in fl.apps() if e[1] in (0x10, 0x11)]
        if not ota:
            raise OSError(_ENOENT)
        labels = [e[4] for e in ota]
        me = self._e[4]
        nxt = labels[(labels.index(me) + 1) % len(labels)] if me in labels else labels[0]
        return type(self)(nxt)

    def set_boot(self):
        fl = self._flash
        e = self._e
        if e[0] != TYPE_APP:
            raise OSError(-0x102)
        if e[1] == SUBTYPES["factory"]:
            fl.step()
            try:
                os.remove(fl._otadata_path())  # erased otadata: the factory app boots
            except OSError:
                pass
            return
        validate(fl, e[4], fl.chip)
        fl._write_otadata({"boot": e[4], "prev": fl.running, "state": NEW if fl.rollback
                           else VALID})

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        fl = cls._flash
        if not fl.rollback:
            raise OSError(-ESP_ERR_NOT_FOUND)
        d = fl.otadata()
        if d and d["boot"] == fl.running and d["state"] == PENDING_VERIFY:
            d["state"] = VALID
            fl._write_otadata(d)


def partition_class(flash):
    """An esp32.Partition class whose partitions live on this simulated flash."""

    class Partition(_Partition):
        _flash = flash

    return Partition
