"""The battery as each board file wires it, read by the real firmware drivers on simulated parts."""

import asyncio
import json
from pathlib import Path

import pytest
from polylink import config
from polylink.drivers.battery import Battery, BatteryError
from polylink.sensors import SensorSet
from polylink_host.hal import HostHAL

BOARDS = Path(__file__).resolve().parents[2] / "boards"


def _read(name: str, node: str, tmp_path: Path) -> tuple[HostHAL, list, list]:
    board = config.validate_board(json.loads((BOARDS / f"{name}.json").read_text()))
    hal = HostHAL(node, tmp_path / node, board)
    cfg = config.validate({"node": node, "mqtt": {"host": "fleet.local"},
                           "sensors": ["battery"]}, board)
    out, errors = [], []
    asyncio.run(SensorSet(hal, cfg).read(out, errors))
    return hal, out, errors


def test_heltec_v3_switches_its_divider_on_only_to_read(tmp_path):
    hal, out, errors = _read("HELTEC_V3", "v3-1", tmp_path)
    assert errors == [] and out[0][0] == 2 and 3.5 < out[0][2] < 4.3, (out, errors)
    assert hal.pins == {37: 1}, "ADC_Ctrl back high (divider off) after the reading"
    # Read without switching the divider on, the pin floats and the driver says so (not 0 V).
    with pytest.raises(BatteryError, match="not connected"):
        asyncio.run(Battery(hal, 1, 4.9).read([]))


def test_tbeam_reads_either_power_chip_it_may_carry(tmp_path):
    seen = {}
    for i in range(8):
        hal, out, errors = _read("LILYGO_TBEAM_V1", f"tbeam-{i}", tmp_path)
        assert errors == [] and 3.5 < out[0][2] < 4.3, (out, errors)
        seen[hal.hw.pmu.chip] = out[0][2]
    assert set(seen) == {"axp192", "axp2101"}, seen


def test_a_board_without_battery_reports_a_sensor_error(tmp_path):
    board = config.validate_board(json.loads((BOARDS / "ESP32_GENERIC.json").read_text()))
    try:
        config.validate({"node": "n", "mqtt": {"host": "h"}, "sensors": ["battery"]}, board)
    except config.ConfigError as e:
        assert "battery" in str(e)
    else:
        raise AssertionError("a battery sensor was accepted on a board without one")
