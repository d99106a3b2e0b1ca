"""The first OTA update after provisioning is a delta: the image carries the factory manifest.

A real node image (`make image`'s builder: mpy-cross + LittleFS) is read back into a flash
directory; a real release (`fleet release build`, mpy-cross, signed) of the same tree with one
module changed is served over the firmware tests' in-memory HTTP server; the real agent updates.
"""

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest
from polylink.ota import agent as ota
from polylink.ota import slots

from fleet.ota import releases as fota
from fleet.settings import Settings
from provisioning import boards, image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "firmware"))
from _fw import FakeHAL, FakeHTTP  # noqa: E402


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """(flash image files, release bundle parts, trusted keys, the changed module's path)."""
    d = tmp_path_factory.mktemp("first")
    board = boards.load("ESP32_GENERIC")
    data = image.build(board, {"node": "n-1"}, {})
    files = image.read_back(data)
    src = d / "fw"
    shutil.copytree(ROOT / "firmware" / "polylink", src / "polylink",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / "polylink" / "status.py", "a") as f:
        f.write('\n_CHANGED_IN = "0.2.0"  # code, not a comment: the bytecode changes\n')
    s = Settings(data_dir=d / "data", port=8000, mqtt_port=1, mqtt_url=None)
    fota.create_key(s, "k1")
    bundle = fota.build(s, "0.2.0", ["ESP32_GENERIC"], source=src, out_dir=d)
    return files, fota.read_bundle(bundle.read_bytes()), fota.trusted_keys(s), board


class _Cfg:
    node = "n-1"
    mqtt_user = None

    def __init__(self, board, keys):
        self.board = board
        self.ota = {"keys": keys, "url": "http://fleet", "window": None, "min_battery": None,
                    "check": 0, "confirm": 1, "ca": None}


class _Node:
    def __init__(self, root, board, keys, served):
        self.hal = FakeHAL(str(root), board)
        self.hal.http = FakeHTTP(served)
        self.cfg = _Cfg(board, keys)
        self.fw = "0.1.0"
        self.reports = []

    def emit(self, mtype, body, ts=None):
        self.reports.append(body)

    def request_reboot(self):
        pass


def _update(tmp_path, provisioned, keep_manifest=True):
    files, (manifest, sig, blobs), keys, board = provisioned
    root = tmp_path / "flash"
    for path, data in files.items():
        if path == image.MANIFEST and not keep_manifest:
            continue
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    served = {"/ota/v1/releases/0.2.0/manifest.json": manifest,
              "/ota/v1/releases/0.2.0/manifest.sig": sig.encode()}
    for sha, data in blobs.items():
        served["/ota/v1/files/" + sha] = data
    node = _Node(root, board, keys, served)
    asyncio.run(ota.Agent(node).update("0.2.0", 1))
    assert node.reports[-1]["state"] == ota.REBOOTING, node.reports[-1]
    assert slots.boot(str(root)) == str(root / "a")
    fetched = [p for p, _ in node.hal.http.requests if p.startswith("/ota/v1/files/")]
    return json.loads(manifest), fetched


def test_image_carries_the_factory_manifest_of_its_app(provisioned):
    files, _, _, _ = provisioned
    m = json.loads(files[image.MANIFEST])
    assert m["format"] == 1 and m["version"] == "0.1.0"
    listed = {f["path"]: f for f in m["files"]}
    assert set(listed) == {p for p in files if p.startswith("polylink/")}
    import hashlib

    for path, f in listed.items():
        assert f["sha256"] == hashlib.sha256(files[path]).hexdigest() and \
            f["size"] == len(files[path]), path


def test_first_update_after_provisioning_downloads_only_the_changed_file(tmp_path, provisioned):
    m, fetched = _update(tmp_path, provisioned)
    status = next(f for f in m["files"] if f["path"] == "polylink/status.mpy")
    assert fetched == ["/ota/v1/files/" + status["sha256"]], fetched


def test_without_the_factory_manifest_the_whole_app_is_downloaded(tmp_path, provisioned):
    # What images made before it did: the control that shows the delta above is the manifest's.
    m, fetched = _update(tmp_path, provisioned, keep_manifest=False)
    assert len(fetched) == len(m["files"]) > 20
