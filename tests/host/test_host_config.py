"""The example config and the board files validate; the simulator CLI rejects bad input."""

import json
from pathlib import Path

import pytest
from polylink import config
from polylink_host import sim

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_for_the_generic_board():
    board = json.loads((ROOT / "boards" / "ESP32_GENERIC.json").read_text())
    raw = json.loads((ROOT / "firmware" / "config.example.json").read_text())
    c = config.validate(raw, board)
    assert (c.node, c.mqtt_port, c.mqtt_tls) == ("street-lamp-0042", 8883, {"ca": "ca.pem"})


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "boards").glob("*.json")
                                         if p.name != "schema.json"), ids=lambda p: p.name)
def test_every_board_file_is_valid(path):
    config.validate_board(json.loads(path.read_text()))


def test_sim_refuses_a_bad_prefix_and_node_count(capsys):
    assert sim.main(["--nodes", "2", "--prefix", "Bad_Prefix"]) == 2
    assert "node" in capsys.readouterr().err
    assert sim.main(["--nodes", "0"]) == 2
    assert "--nodes" in capsys.readouterr().err


def test_sim_refuses_a_bad_mqtt_url(capsys):
    assert sim.main(["--mqtt-url", "http://x"]) == 2
    assert "MQTT_URL" in capsys.readouterr().err


def test_sim_board_adds_a_battery_to_the_devkitc():
    b = sim.sim_board()
    assert b["battery"] == sim.SIM_BATTERY and "battery" in b["sensors"]
    config.validate_board(b)
