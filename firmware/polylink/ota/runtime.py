"""MicroPython runtime image updates: stream into the next OTA app partition, verify, set_boot,
and confirm after a healthy boot (docs/ota.md, "MicroPython runtime image").

Loaded only while an update carries a runtime image or a trial must confirm one. esp32.Partition
comes from the HAL (hal.partition()), so the host port runs this very code on a simulation.
"""

import asyncio
import binascii
import hashlib
import json
import os

from micropython import const

from polylink import config
from polylink.codes import DOWNLOAD, HASH_MISMATCH, STORAGE
from polylink.net.http import HTTPError
from polylink.ota.failure import RETRIES, OTAError
from polylink.store import replace

config.unload("codes")  # Device RAM: the three codes above are this module's now

_BLOCK = const(4096)  # esp32.Partition block = the flash sector ioctl(6, n) erases
_PIECE = const(1024)
_SAVE_EVERY = const(16)  # blocks between progress records (64 KB): a resume redoes at most that
PROGRESS = "runtime.part"


def running_label(hal):
    """The label of the app partition the chip booted (ota_0, ota_1 or factory)."""
    p = hal.partition()
    return p(p.RUNNING).info()[4]


def confirm(hal):
    """The new runtime proved healthy: cancel the bootloader's rollback."""
    hal.partition().mark_app_valid_cancel_rollback()


def _load_progress(path, sha, label):
    try:
        with open(path) as f:
            p = json.load(f)
        if p.get("sha256") == sha and p.get("label") == label:
            return p["done"]
    except (OSError, ValueError, KeyError):
        pass
    return 0


def _save_progress(path, sha, label, done):
    with open(path + ".tmp", "w") as f:
        json.dump({"sha256": sha, "label": label, "done": done}, f)
    replace(path + ".tmp", path)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


async def fetch(agent, url, rt, progress):
    """Stream runtime entry rt into the next update partition, verify it; return the partition.

    progress(n) is told the bytes written so far. Nothing here touches the running partition or
    otadata: until set_boot() the chip boots what it booted before.
    """
    hal = agent.hal
    P = hal.partition()
    try:
        part = P(P.RUNNING).get_next_update()
    except OSError as e:
        raise OTAError(STORAGE, "no OTA app partition for a runtime image: %s" % e) from None
    info = part.info()
    label = info[4]
    size = rt["size"]
    sha = rt["sha256"]
    if size > info[3]:
        raise OTAError(STORAGE, "runtime image is %d bytes, %s holds %d" % (size, label, info[3]))
    path = hal.path(PROGRESS)
    done = _load_progress(path, sha, label)
    if done > size or done % _BLOCK:
        done = 0
    pos = [done]  # bytes programmed; a cut connection resumes from exactly there
    for attempt in range(RETRIES):
        try:
            await _stream(agent, url, sha, size, part, pos, path, label, progress)
            break
        except HTTPError as e:
            if attempt == RETRIES - 1:
                raise OTAError(DOWNLOAD, str(e)) from None
            await asyncio.sleep(1 << attempt)
    if readback_sha(part, size, agent.buf) != sha:
        # Start from scratch next time: which block went wrong is not known.
        _remove(path)
        raise OTAError(HASH_MISMATCH, "runtime image read back from %s" % label)
    _save_progress(path, sha, label, size)
    return part


async def _stream(agent, url, sha, size, part, pos, path, label, progress):
    """One GET from byte pos[0]; pos[0] follows every piece programmed.

    The extended block protocol (docs.micropython.org, os.AbstractBlockDev): a block is erased
    with ioctl(6, n) when its first byte is due, then pieces are programmed with
    writeblocks(n, piece, offset), so no 4 KB buffer is held, only the 1 KB piece just read.
    """
    done = pos[0]
    if done >= size:
        return
    r = await agent.request(url, "/ota/v1/files/" + sha, done)
    try:
        if r.status == 416:
            _remove(path)
            raise HTTPError("range not satisfiable; starting the runtime image again")
        if r.status not in (200, 206):
            raise OTAError(DOWNLOAD, "HTTP %d for the runtime image" % r.status)
        done = r.start  # 200: the server sent it all from byte 0
        pos[0] = done
        while True:
            off = done % _BLOCK
            # Pieces never cross a block: each lands in the block erased for it.
            b = await r.read(min(_PIECE, _BLOCK - off))
            if not b:
                break
            if done + len(b) > size:
                raise OTAError(DOWNLOAD, "runtime image is larger than announced")
            n = done // _BLOCK
            if not off:
                part.ioctl(6, n)  # erase the 4 KB sector before its first byte
            part.writeblocks(n, b, off)
            done += len(b)
            pos[0] = done
            if not done % _BLOCK or done == size:
                progress(done)
                if not done % (_SAVE_EVERY * _BLOCK):
                    _save_progress(path, sha, label, done)
        if done != size:
            raise HTTPError("runtime image ended at byte %d of %d" % (done, size))
    finally:
        await r.close()


def readback_sha(part, size, buf):
    """SHA-256 hex of the first size bytes of partition part, read through buf."""
    h = hashlib.sha256()
    n = 0
    step = len(buf)
    while n < size:
        k = min(step, size - n, _BLOCK - n % _BLOCK)
        mv = memoryview(buf)[:k]
        part.readblocks(n // _BLOCK, mv, n % _BLOCK)
        h.update(mv)
        n += k
    return binascii.hexlify(h.digest()).decode()


def set_boot(part):
    """Make part the partition the bootloader starts next (pending verification)."""
    try:
        part.set_boot()
    except OSError as e:
        raise OTAError(STORAGE, "set_boot refused the runtime image: %s" % e) from None
