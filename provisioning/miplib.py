"""micropython-lib packages (mip's index format), fetched on the host at image build time.

mip, MicroPython's installer, reads {index}/package/{mpy}/{name}/{version}.json, which lists
"hashes" ([target path, short sha256]) and "deps" ([name, version]); each file is served at
{index}/file/{hash[:2]}/{hash}. We do the same on the host, so the packages land in the
filesystem image instead of being downloaded by the node over its own WiFi. Fetched files are
kept in a cache directory (build/mip-cache by default): a build with a warm cache needs no network.
"""

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

INDEX = "https://micropython.org/pi/v2"
# The .mpy format version of MicroPython 1.23 and later (sys.implementation._mpy & 0xFF).
MPY_VERSION = 6
TIMEOUT_S = 20
# The micropython-lib packages a board's radio needs: the chip's driver (which pulls in the
# `lora` core as a dependency) and the asyncio modem the firmware uses.
RADIO_PACKAGES = {
    "sx1276": ["lora-sx127x", "lora-async"],
    "sx1262": ["lora-sx126x", "lora-async"],
}


class MipError(RuntimeError):
    """A package could not be fetched or did not match its index entry."""


def packages_for(board: dict) -> list[str]:
    """The micropython-lib packages a board needs (none for a board without a radio)."""
    radio = board.get("radio")
    return list(RADIO_PACKAGES[radio["chip"]]) if radio else []


def _get(url: str, cache: Path | None, key: str) -> bytes:
    if cache is not None and (cache / key).exists():
        return (cache / key).read_bytes()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MipError(f"cannot fetch {url}: {reason}. This needs internet access to the "
                       "micropython-lib index, or a cache directory (--mip-cache) that already "
                       "holds the packages") from None
    if cache is not None:
        (cache / key).parent.mkdir(parents=True, exist_ok=True)
        (cache / key).write_bytes(data)
    return data


def fetch(names: list[str], index: str = INDEX, cache: Path | None = None,
          mpy_version: int = MPY_VERSION, target: str = "lib") -> dict[str, bytes]:
    """{path on the device: content} of the packages and their dependencies."""
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    todo = [(name, "latest") for name in names]
    index = index.rstrip("/")
    while todo:
        name, version = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        meta_key = f"package/{mpy_version}/{name}/{version}.json"
        try:
            meta = json.loads(_get(f"{index}/{meta_key}", cache, meta_key))
        except ValueError:
            raise MipError(f"{index}/{meta_key} is not valid JSON") from None
        for path, short in meta.get("hashes", ()):
            key = f"file/{short[:2]}/{short}"
            data = _get(f"{index}/{key}", cache, key)
            if not hashlib.sha256(data).hexdigest().startswith(short):
                raise MipError(f"{name}: {path} does not match its hash {short} in the index")
            files[f"{target}/{path}"] = data
        todo += [(dep, ver) for dep, ver in meta.get("deps", ())]
    return files
