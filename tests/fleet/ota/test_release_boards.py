"""OTA releases carry the app's subpackages; only a release for a board with a radio carries the
LoRaWAN code (a WiFi-only node never loads it)."""

import json

import pytest

from fleet.ota import releases as ota


def _paths(settings, tmp_path, boards):
    path = ota.build(settings, "0.2.0", boards, out_dir=tmp_path, compile_mpy=False)
    manifest, _sig, _blobs = ota.read_bundle(path.read_bytes())
    return {f["path"] for f in json.loads(manifest)["files"]}


@pytest.mark.parametrize("boards, lora", [
    (["ESP32_GENERIC"], False),
    (["ESP32_GENERIC", "ESP32_GENERIC_OTA"], False),
    (["HELTEC_V3"], True),
    (["ESP32_GENERIC", "HELTEC_V3"], True),  # one release for both: the radio board needs it
])
def test_lorawan_files_only_in_releases_for_radio_boards(settings, tmp_path, boards, lora):
    ota.create_key(settings, "k1")
    paths = _paths(settings, tmp_path, boards)
    assert {"polylink/node.py", "polylink/net/mqtt.py", "polylink/ota/agent.py",
            "polylink/drivers/bme280.py", "polylink/hal/esp32.py"} <= paths
    assert ("polylink/lorawan/device.py" in paths) is lora
    assert any(p.startswith("polylink/lorawan/") for p in paths) is lora
