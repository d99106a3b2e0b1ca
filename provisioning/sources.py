"""Where the node's source tree (firmware/) and the board files (boards/) are.

In a checkout (`make setup`'s editable install, the tests) they sit beside the packages. A normal
install (`pip install /opt/polylink`, a wheel) has no checkout: pyproject.toml ships both folders
as package data of `polylink_sources` (its subpackages `.firmware` and `.boards`), next to
`provisioning` in site-packages, so the same two paths hold the same files there.
"""

from pathlib import Path

_BESIDE = Path(__file__).resolve().parent.parent
_INSTALLED = _BESIDE / "polylink_sources"
ROOT = _INSTALLED if _INSTALLED.is_dir() else _BESIDE
FIRMWARE = ROOT / "firmware"  # boot.py, main.py and the polylink package's sources
BOARDS = ROOT / "boards"  # one JSON file per board, and schema.json
