"""The node's OTA agent: offers, signed manifests, resumable delta downloads, the slot switch,
the health check after the switch and the state reports (docs/ota.md).

Loaded only when an update is offered, a trial boot must prove its health or a periodic check is
configured; nothing here runs on a node that is not updating.
"""

import asyncio
import binascii
import gc
import hashlib
import json
import os

from polylink import config, proto
from polylink.codes import (  # noqa: F401 - the OTA_UP codes are part of this module's API
    BAD_MANIFEST,
    BAD_SIGNATURE,
    BOARD,
    BUSY,
    CONFIRMED,
    DECLINED,
    DEFERRED,
    DOWNLOAD,
    DOWNLOADING,
    FAILED,
    HASH_MISMATCH,
    LOW_BATTERY,
    MAX_KEYS,
    MICROPYTHON,
    NO_MEMORY,
    OFFERED,
    OLDER_RELEASE,
    REBOOTING,
    ROLLED_BACK,
    RUNTIME_ROLLED_BACK,
    STORAGE,
    UNKNOWN_KEY,
    VERIFIED,
    WINDOW,
)
from polylink.net.http import HTTPError, get
from polylink.ota import slots
from polylink.ota.failure import RETRIES, OTAError
from polylink.store import replace

# Device RAM: the codes above are now this module's names; codes.py itself need not stay.
config.unload("codes")

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_CHUNK = 1024
_MAX_MANIFEST = 16384
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"


def hexdigest(h) -> str:
    return binascii.hexlify(h.digest()).decode()


def _exists(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return None


def _makedirs(path):
    d = ""
    for part in path.split("/")[1:]:
        d += "/" + part
        try:
            os.mkdir(d)
        except OSError:
            pass


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _walk(d, prefix, out):
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        p = d + "/" + name
        if os.stat(p)[0] & 0x4000:
            _walk(p, prefix + name + "/", out)
        else:
            out.append(prefix + name)


def digest_file(path, buf):
    """SHA-256 digest of a file, read in buf-sized pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return h.digest()


def hash_file(path, buf):
    """SHA-256 hex of a file."""
    return binascii.hexlify(digest_file(path, buf)).decode()


def check_signature(keys, digest, sig_line):
    """Raise OTAError unless sig_line ("key-id <r||s hex>") signs the manifest's SHA-256 digest
    with a trusted key; return the key id."""
    from polylink.ota import ecdsa

    parts = sig_line.split()
    if len(parts) != 2:
        raise OTAError(BAD_SIGNATURE, "signature file must be '<key id> <hex>'")
    kid = parts[0]
    if kid not in keys:
        raise OTAError(UNKNOWN_KEY, "signed with key %s, which this node does not trust" % kid)
    try:
        pub = ecdsa.public_key(binascii.unhexlify(keys[kid]))
        ecdsa.verify_digest(pub, digest, binascii.unhexlify(parts[1]))
    except (ValueError, ecdsa.SignatureError) as e:
        raise OTAError(BAD_SIGNATURE, "bad signature (key %s): %s" % (kid, e)) from None
    finally:
        config.unload("ota.ecdsa")  # needed once per update: not worth its heap while downloading
    return kid


def _version_tuple(v):
    out = []
    for p in str(v).split("."):
        try:
            out.append(int(p))
        except ValueError:
            raise OTAError(BAD_MANIFEST, "bad version %r" % v) from None
    return tuple(out)


def check_runtime(rt, chip):
    """Raise OTAError unless rt is a well-formed runtime entry for this chip."""
    if (not isinstance(rt, dict) or not isinstance(rt.get("sha256"), str)
            or len(rt["sha256"]) != 64 or not isinstance(rt.get("size"), int)
            or rt["size"] <= 0 or not isinstance(rt.get("micropython"), str)):
        raise OTAError(BAD_MANIFEST, "bad runtime entry in the manifest")
    if chip is not None and rt.get("chip") != chip:
        raise OTAError(BOARD, "runtime image is for %s, this chip is %s" % (rt.get("chip"), chip))


def check_keys(keys):
    """Raise OTAError unless keys is {key id: P-256 public key hex} with 1..MAX_KEYS entries."""
    if not isinstance(keys, dict) or not keys or len(keys) > MAX_KEYS:
        raise OTAError(BAD_MANIFEST, "manifest keys must name 1..%d keys" % MAX_KEYS)
    for kid in keys:
        pub = keys[kid]
        if (not isinstance(kid, str) or not 0 < len(kid) <= 32 or not isinstance(pub, str)
                or len(pub) != 130 or pub[:2] != "04"):
            raise OTAError(BAD_MANIFEST, "bad key %r in the manifest" % (kid,))
        for c in pub:
            if c not in "0123456789abcdef":
                raise OTAError(BAD_MANIFEST, "bad key %r in the manifest" % (kid,))


def key_ids(keys):
    """The ids of trusted keys as OTA_UP's `keys` field carries them: sorted, comma-separated."""
    return ",".join(sorted(keys))


def check_manifest(m, kid, version, board, mpy_version, chip=None, floor=None):
    """Raise OTAError unless manifest dict m fits this node; return its files list.

    floor: the version this node last confirmed; an older release is refused unless its signed
    manifest says "downgrade_from": exactly that version (an operator's explicit downgrade).
    """
    if not isinstance(m, dict) or m.get("format") != 1:
        raise OTAError(BAD_MANIFEST, "manifest is not format 1")
    if m.get("key") != kid:
        raise OTAError(BAD_SIGNATURE, "manifest names key %r, signature key %r"
                       % (m.get("key"), kid))
    if version is not None and m.get("version") != version:
        raise OTAError(BAD_MANIFEST, "manifest is %r, offer was %r" % (m.get("version"), version))
    if floor is not None and _version_tuple(m.get("version")) < _version_tuple(floor):
        # A replayed old release would bring back old code and, through its key set, old keys.
        if m.get("downgrade_from") != floor:
            raise OTAError(OLDER_RELEASE, "%s is older than %s, and not a downgrade signed for it"
                           % (m.get("version"), floor))
    boards = m.get("boards")
    if not isinstance(boards, list) or board not in boards:
        raise OTAError(BOARD, "release is for %s, this board is %s" % (boards, board))
    if "keys" in m:
        check_keys(m["keys"])
    rt = m.get("runtime")
    if rt is not None:
        check_runtime(rt, chip)
        # The app will run on the runtime the release brings, not on the one running now.
        mpy_version = _version_tuple(rt["micropython"])
    need = m.get("micropython")
    if need and tuple(mpy_version) < _version_tuple(need):
        raise OTAError(MICROPYTHON, "release needs MicroPython %s" % need)
    files = m.get("files")
    if not isinstance(files, list) or not files:
        raise OTAError(BAD_MANIFEST, "manifest lists no files")
    for f in files:
        p = f.get("path") if isinstance(f, dict) else None
        if (not isinstance(p, str) or not p or p[0] == "/" or ".." in p
                or p in (MANIFEST, SIGNATURE) or any(c not in _PATH_CHARS for c in p)):
            raise OTAError(BAD_MANIFEST, "bad file path %r" % (p,))
        sha = f.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or not isinstance(f.get("size"), int):
            raise OTAError(BAD_MANIFEST, "bad hash or size for %s" % p)
    return files


def load_manifest(d):
    """The manifest of the app in directory d, or None."""
    try:
        with open(d + "/" + MANIFEST) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def in_window(window, t):
    """True if Unix time t falls in window [start hour, end hour) UTC (None: always)."""
    if not window:
        return True
    if t is None:
        return False  # no clock yet: cannot tell, so wait
    h = t // 3600 % 24
    a, b = window
    return a <= h < b if a <= b else (h >= a or h < b)


class Agent:
    """Carries out one update at a time for a node and reports every state change."""

    def __init__(self, node):
        self.node = node
        self.hal = node.hal
        self.root = node.hal.root
        self.cfg = node.cfg.ota
        self.task = None
        self.version = None  # the version being updated to
        self.buf = bytearray(_CHUNK)
        c = node.cfg
        # Registered nodes fetch files with their file login (HTTP Basic), which the broker does
        # not accept; nodes provisioned before it existed still use their MQTT login.
        pw = self.cfg.get("password") or getattr(c, "mqtt_password", None)
        self.login = (c.mqtt_user, pw) if getattr(c, "mqtt_user", None) else None

    # -- reports
    def report(self, state, version, rid=None, **kw):
        body = {"state": state, "version": version}
        if rid is not None:
            body["rid"] = rid
        for k in kw:
            if kw[k] is not None:
                body[k] = kw[k]
        if "text" in body:
            body["text"] = proto.clip(body["text"], proto.TEXT80_MAX)  # bytes, not characters
        self.node.emit(proto.OTA_UP, body)

    # -- entry points
    def offer(self, body):
        """An OTA_DOWN from the fleet: op 1 offers version, op 2 cancels it."""
        version = body["version"]
        rid = body.get("rid")
        if body["op"] == 2:
            if self.task is not None and self.version == version:
                self.task.cancel()
                self.task = None
            return
        self.start(version, rid, body.get("url"))

    def start(self, version, rid, url=None):
        if self.task is not None and not self.task.done():
            if self.version != version:
                self.report(DECLINED, version, rid, reason=BUSY,
                            text="busy with %s" % self.version)
            return
        self.version = version
        self.task = asyncio.create_task(self.update(version, rid, url))

    async def update(self, version, rid, url=None):
        """The whole update; never raises (failures are reported)."""
        try:
            await self._update(version, rid, url or self.cfg.get("url"))
        except OTAError as e:
            self.report(FAILED, version, rid, reason=e.reason, text=e.text)
        except OSError as e:
            self.report(FAILED, version, rid, reason=STORAGE, text="flash: %s" % e)
        except MemoryError as e:
            # Found on the Unix port: staging ran out of heap, the task died unreported and the
            # fleet showed the update "offered" for ever. What staging held is garbage now.
            gc.collect()
            self.report(FAILED, version, rid, reason=NO_MEMORY, text="MemoryError: %s" % e)
        finally:
            self._release()

    def _link(self):
        """The MQTT link when it is TLS: it yields its socket to HTTPS downloads, else None."""
        if getattr(self.node.cfg, "mqtt_tls", None) is None:
            return None
        return getattr(self.node, "link", None)

    async def request(self, url, path, start):
        """One GET; over HTTPS the TLS MQTT session is ended first (one TLS socket, RAM)."""
        link = self._link()
        if link is not None and url.startswith("https://"):
            await link.hold()
        return await get(self.hal, url, path, start, self.cfg.get("ca"), self.login)

    def _release(self):
        link = self._link()
        if link is not None:
            link.release()

    async def _update(self, version, rid, url):
        node = self.node
        st = slots.read(self.root)
        if st["trial"]:
            self.report(DECLINED, version, rid, reason=BUSY,
                        text="%s has not confirmed its health yet" % st["version"])
            return
        if version == node.fw and not (url and await self._runtime_pending(url, version)):
            # Already runs it (and the MicroPython runtime it brings, if any).
            self.report(CONFIRMED, version, rid, keys=key_ids(self.cfg.get("keys") or {}))
            return
        why = self.low_battery()
        if why:
            self.report(DECLINED, version, rid, reason=LOW_BATTERY, text=why)
            return
        window = self.cfg.get("window")
        if not in_window(window, self.hal.time()):
            self.report(DEFERRED, version, rid, reason=WINDOW,
                        text="waits for %02d-%02d UTC" % (window[0], window[1]))
            while not in_window(window, self.hal.time()):
                await asyncio.sleep(30)
        if not url:
            raise OTAError(DOWNLOAD, "no OTA URL in the offer or in config ota.url")
        if getattr(node.cfg, "mqtt_tls", None) is not None and not url.startswith("https://"):
            # A node that reaches its broker over TLS is on an open network: an update fetched
            # in the clear would hand its file credential to anyone listening.
            raise OTAError(DOWNLOAD, "refusing %s: this node fetches updates over HTTPS only"
                           % url[:40])
        self.report(OFFERED, version, rid)
        slot = slots.inactive(st)
        d = slots.slot_dir(self.root, slot)
        files, rt = await self.stage(url, version, d, st, rid)
        part = None
        if rt is not None:
            # A MicroPython runtime image (boards with OTA partitions): into the next app
            # partition, read back and verified before anything that boots changes.
            from polylink.ota import runtime

            part = await runtime.fetch(self, url, rt, self._runtime_progress)
        self._release()  # downloads done: the MQTT session carries the reports again
        self.report(VERIFIED, version, rid)
        if part is None:
            slots.switch(self.root, slot, version, rid)
        else:
            # Pointer first, then otadata: a cut between them boots the old runtime with the
            # pointer expecting the new one, and after_boot() reverts the app (reason 14).
            slots.switch(self.root, slot, version, rid, part.info()[4])
            try:
                runtime.set_boot(part)  # pyright: ignore[reportPossiblyUnbound]
            except OTAError:
                slots.undo_switch(self.root)
                raise
        self.report(REBOOTING, version, rid)
        del files
        node.request_reboot()

    def _runtime_progress(self, n):
        self._progress(self._files_total + n)

    def low_battery(self):
        limit = self.cfg.get("min_battery")
        bat = self.node.cfg.board.get("battery")
        if not limit or not bat:
            return None
        from polylink.drivers.battery import Battery  # Device RAM: only with ota.min_battery

        v = Battery(self.hal, bat["adc_pin"], bat["divider"]).volts()
        if v < limit:
            return "battery %.2f V below %.2f V" % (v, limit)
        return None

    # -- staging
    async def stage(self, url, version, d, st, rid=None):
        """Fetch, verify and write release version into slot directory d; return its files."""
        _makedirs(d)
        _remove(d + "/" + MANIFEST)  # from here on the slot is not whole until switch
        new = d + "/" + MANIFEST + ".new"
        _remove(new)
        _remove(new + ".part")
        sig, files, rt = await self._manifest(url, version, new)
        # Files of an older release left in this slot go first; .part files of ours stay.
        wanted = {}
        for f in files:
            wanted[f["path"]] = 1
            wanted[f["sha256"] + ".part"] = 1
        have = []
        _walk(d, "", have)
        for p in have:
            if p not in wanted and p != MANIFEST + ".new":
                _remove(d + "/" + p)
        del have, wanted
        old_dir = slots.slot_dir(self.root, st["active"])
        old = {}
        om = load_manifest(old_dir)
        if om:
            for f in om.get("files", ()):
                old[f["sha256"]] = f["path"]
        del om
        total = 0
        for f in files:
            total += f["size"]
        self._files_total = total
        if rt is not None:
            total += rt["size"]
        self._total = total
        self._shown = -1
        self._version = version
        self._rid = rid
        done = 0
        for f in files:
            dest = d + "/" + f["path"]
            _makedirs(dest.rsplit("/", 1)[0])
            if _exists(dest) == f["size"] and hash_file(dest, self.buf) == f["sha256"]:
                pass  # staged before a reboot or power cut
            elif f["sha256"] in old and self.copy(old_dir + "/" + old[f["sha256"]], dest,
                                                  f["sha256"]):
                pass  # the running app holds it: copied on flash
            else:
                await self.fetch(url, "/ota/v1/files/" + f["sha256"], dest, f["size"],
                                 f["sha256"], d + "/" + f["sha256"] + ".part")
            done += f["size"]
            self._progress(done)
        # Everything again, from flash, before anything changes.
        for f in files:
            dest = d + "/" + f["path"]
            if _exists(dest) != f["size"] or hash_file(dest, self.buf) != f["sha256"]:
                _remove(dest)
                raise OTAError(HASH_MISMATCH, "hash of %s" % f["path"])
        with open(d + "/" + SIGNATURE + ".new", "wb") as f:
            f.write(sig)
        os.rename(d + "/" + SIGNATURE + ".new", d + "/" + SIGNATURE)
        os.rename(new, d + "/" + MANIFEST)  # the slot is whole now
        return files, rt

    async def _manifest(self, url, version, new):
        """Fetch the release's signature and manifest (into file new) and check both; return
        (signature, files, runtime entry or None when this node runs that MicroPython)."""
        sig = await self._small(url, "/ota/v1/releases/%s/%s" % (version, SIGNATURE), 200)
        await self.fetch(url, "/ota/v1/releases/%s/%s" % (version, MANIFEST), new, None, None,
                         new + ".part")
        kid = check_signature(self.cfg.get("keys") or {}, digest_file(new, self.buf),
                              sig.decode())
        with open(new) as f:
            try:
                m = json.load(f)
            except ValueError:
                raise OTAError(BAD_MANIFEST, "manifest is not JSON") from None
        board = self.node.cfg.board
        files = check_manifest(m, kid, version, board.get("name"), self.hal.mpy_version(),
                               board.get("chip"), slots.floor(slots.read(self.root), self.node.fw))
        rt = m.get("runtime")
        if rt is not None and _version_tuple(rt["micropython"]) == tuple(self.hal.mpy_version()):
            rt = None  # the node already runs that MicroPython version
        return sig, files, rt

    async def _runtime_pending(self, url, version):
        """Offered the app version this node runs: True if the release also brings a MicroPython
        runtime it does not run yet (an update that failed only in its runtime part, or a node
        flashed with the app but not the runtime), so the update must go on."""
        new = self.root + "/offer.json"
        try:
            return (await self._manifest(url, version, new))[2] is not None
        finally:
            _remove(new)
            _remove(new + ".part")

    def _progress(self, done):
        """Report DOWNLOADING after each quarter of the update's bytes."""
        total = self._total
        pct = done * 100 // total if total else 100
        if pct // 25 != self._shown // 25 or (pct == 100 and self._shown != 100):
            self._shown = pct
            self.report(DOWNLOADING, self._version, self._rid, progress=pct, bytes=done)

    def copy(self, src, dest, sha):
        """Copy a file this node already holds (same hash in the running app's manifest).

        False when the local file is missing or no longer what that manifest says (a file
        deployed by hand): it is then downloaded like any other.
        """
        h = hashlib.sha256()
        part = dest + ".part"
        buf = self.buf
        try:
            s = open(src, "rb")
        except OSError:
            return False
        with s, open(part, "wb") as o:
            while True:
                n = s.readinto(buf)
                if not n:
                    break
                mv = memoryview(buf)[:n]
                h.update(mv)
                o.write(mv)
        if hexdigest(h) != sha:
            _remove(part)
            return False
        os.rename(part, dest)
        return True

    async def _small(self, url, path, limit):
        for attempt in range(RETRIES):
            try:
                r = await self.request(url, path, 0)
                try:
                    if r.status != 200:
                        raise OTAError(DOWNLOAD, "HTTP %d for %s" % (r.status, path))
                    out = b""
                    while True:
                        b = await r.read(limit)
                        if not b:
                            return out
                        out += b
                        if len(out) > limit:
                            raise OTAError(DOWNLOAD, "%s is too large" % path)
                finally:
                    await r.close()
            except HTTPError as e:
                if attempt == RETRIES - 1:
                    raise OTAError(DOWNLOAD, str(e)) from None
                await asyncio.sleep(1 << attempt)
        raise OTAError(DOWNLOAD, path)

    async def fetch(self, url, path, dest, size, sha, part):
        """Download to dest through file part, resuming with Range; verify size and hash."""
        for attempt in range(RETRIES):
            try:
                await self._fetch_once(url, path, part, size)
                break
            except HTTPError as e:
                if attempt == RETRIES - 1:
                    raise OTAError(DOWNLOAD, str(e)) from None
                await asyncio.sleep(1 << attempt)
        if sha is not None:
            got = _exists(part)
            if got != size or hash_file(part, self.buf) != sha:
                _remove(part)
                raise OTAError(HASH_MISMATCH, "hash of %s" % path.rsplit("/", 1)[-1])
        replace(part, dest)

    async def _fetch_once(self, url, path, part, size):
        have = _exists(part)
        if size is not None and have is not None and have > size:
            _remove(part)
            have = None
        if size is not None and have == size:
            return  # complete (also a complete empty file)
        have = have or 0
        r = await self.request(url, path, have)
        try:
            if r.status == 416:
                _remove(part)
                raise HTTPError("range not satisfiable; starting %s again" % path)
            if r.status not in (200, 206):
                raise OTAError(DOWNLOAD, "HTTP %d for %s" % (r.status, path))
            with open(part, "ab" if r.start else "wb") as f:
                got = r.start
                while True:
                    b = await r.read(_CHUNK)
                    if not b:
                        break
                    got += len(b)
                    if (size is not None and got > size) or got > (size or _MAX_MANIFEST):
                        raise OTAError(DOWNLOAD, "%s is larger than announced" % path)
                    f.write(b)
        finally:
            await r.close()

    # -- after the switch
    async def after_boot(self):
        """Report a rollback; confirm a trial version once healthy, or revert it."""
        node = self.node
        st = slots.read(self.root)
        rb = st.get("rolled_back")
        if rb:
            self.report(ROLLED_BACK, rb["version"], st.get("rid"), reason=rb["reason"],
                        text="back on %s" % node.fw)
            slots.clear_rolled_back(self.root)
        if not st["trial"]:
            return
        hal = self.hal
        label = st.get("runtime")
        if label:
            from polylink.ota import runtime

            if runtime.running_label(hal) != label:
                # The bootloader rolled the new runtime back (a reset before it was confirmed,
                # or a cut before set_boot): the app that needs it goes back too.
                slots.revert(self.root, RUNTIME_ROLLED_BACK)
                hal.reset()
                return
        confirm_ms = self.cfg.get("confirm", 300) * 1000
        t0 = hal.ticks_ms()
        while True:
            await asyncio.sleep(1)
            age = hal.ticks_diff(hal.ticks_ms(), t0)
            healthy = node.link.up.is_set() and node.sent > 0 and not node.store.count
            if age >= confirm_ms and healthy:
                if label:
                    # The runtime first: confirming the app alone and losing power before
                    # this would leave the new app on a runtime the next reset rolls back.
                    runtime.confirm(hal)  # pyright: ignore[reportPossiblyUnbound]
                # Keys before the slot: a cut between the two confirms again on the next boot,
                # and adopting the same keys twice changes nothing.
                self.adopt_keys(slots.slot_dir(self.root, st["active"]))
                slots.confirm(self.root)
                self.report(CONFIRMED, st["version"], st.get("rid"),
                            keys=key_ids(self.cfg.get("keys") or {}))
                return
            if age >= 4 * confirm_ms:
                slots.revert(self.root, slots.NOT_CONFIRMED)
                hal.reset()
                return

    def adopt_keys(self, d):
        """Trust the key set the release in slot directory d carries, if it names one.

        Its manifest was verified against a key this node trusted before it was staged, so the
        fleet can rotate keys over the air: a release signed with the old key brings the new one
        (and later a release signed with the new one leaves the old out). Only a release that
        proved healthy gets here, so a bad release changes nothing.
        """
        m = load_manifest(d)
        keys = m.get("keys") if m else None
        del m
        if not keys or keys == self.cfg.get("keys"):
            return
        check_keys(keys)
        config.save(self.root, {"keys": keys}, "ota")
        self.cfg["keys"] = keys

    async def check_loop(self, every):
        """Ask the fleet every `every` seconds whether an update waits for this node."""
        while True:
            await asyncio.sleep(every)
            url = self.cfg.get("url")
            if not url or (self.task is not None and not self.task.done()):
                continue
            try:
                raw = await self._small(url, "/ota/v1/nodes/%s/offer" % self.node.cfg.node, 512)
                offer = json.loads(raw)
            except (OTAError, ValueError):
                continue
            finally:
                self._release()
            if isinstance(offer, dict) and offer.get("version"):
                self.start(offer["version"], offer.get("rid"), url)
