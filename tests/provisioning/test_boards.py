"""boards/: every board file against boards/schema.json and the rules a schema cannot express."""

import copy
import json

import pytest
from jsonschema import Draft202012Validator
from polylink import config

from provisioning import boards

REQUIRED = {"ESP32_GENERIC", "ESP32_GENERIC_OTA", "HELTEC_WIFI_LORA_32_V2", "HELTEC_V3",
            "LILYGO_TBEAM_V1", "LILYGO_T3_S3"}


def test_the_issue_boards_exist():
    assert REQUIRED <= set(boards.names())


def test_schema_is_a_valid_json_schema():
    Draft202012Validator.check_schema(json.loads(boards.SCHEMA.read_text()))


@pytest.mark.parametrize("name", boards.names())
def test_board_file_is_valid(name):
    board = boards.load(name)
    assert board["name"] == name
    fs = boards.fs_partition(board)
    assert fs["offset"] + fs["size"] <= board["flash_size"]
    # The firmware reads the same file as board.json on the device: its own check must accept it.
    assert config.validate_board(copy.deepcopy(board))["name"] == name


@pytest.mark.parametrize("name", [n for n in boards.names() if boards.load(n)["radio"]])
def test_radio_pins_match_the_chip(name):
    radio = boards.load(name)["radio"]
    if radio["chip"] == "sx1262":
        assert radio["busy"] is not None and radio["dio1"] is not None and radio["dio0"] is None
    else:
        assert radio["dio0"] is not None and radio["busy"] is None


def test_radio_boards_have_the_expected_chip():
    chips = {n: (boards.load(n)["radio"] or {}).get("chip") for n in REQUIRED}
    assert chips == {"ESP32_GENERIC": None, "ESP32_GENERIC_OTA": None,
                     "HELTEC_WIFI_LORA_32_V2": "sx1276", "LILYGO_TBEAM_V1": "sx1276",
                     "HELTEC_V3": "sx1262", "LILYGO_T3_S3": "sx1262"}
    v3 = boards.load("HELTEC_V3")["radio"]
    assert (v3["dio3_tcxo_millivolts"], v3["busy"], v3["dio2_rf_sw"]) == (1800, 13, True)


def test_ota_board_has_two_equal_slots_and_otadata():
    board = boards.load("ESP32_GENERIC_OTA")
    assert boards.has_ota(board) and not boards.has_ota(boards.load("ESP32_GENERIC"))
    sub = {p["subtype"]: p for p in board["partitions"]}
    assert sub["ota_0"]["size"] == sub["ota_1"]["size"] and "ota" in sub


def _bad(mutate):
    board = copy.deepcopy(boards.load("HELTEC_V3"))
    mutate(board)
    with pytest.raises(boards.BoardError) as e:
        boards.check(board, "HELTEC_V3.json")
    return str(e.value)


def test_inconsistent_boards_are_refused_with_the_reason():
    assert "sx1262 needs busy" in _bad(lambda b: b["radio"].update(busy=None))
    assert "sx1276 needs dio0" in _bad(lambda b: b["radio"].update(chip="sx1276", busy=None,
                                                                    dio2_rf_sw=False,
                                                                    dio3_tcxo_millivolts=None))
    assert "sx1276 has no busy pin" in _bad(
        lambda b: b["radio"].update(chip="sx1276", dio0=26, dio2_rf_sw=False,
                                    dio3_tcxo_millivolts=None))
    assert "overlaps" in _bad(lambda b: b["partitions"][3].update(offset=0x300000))
    assert "past the 8 MB flash" in _bad(lambda b: b["partitions"][3].update(size=0x600000))
    assert "GPIO13 is used by both" in _bad(lambda b: b.update(led_pin=13))
    assert "no data partition named 'vfs'" in _bad(lambda b: b["partitions"].pop())
    assert "battery needs battery" in _bad(lambda b: b.update(battery=None))


def test_schema_errors_name_the_field():
    assert "radio/chip" in _bad(lambda b: b["radio"].update(chip="sx1280"))
    assert "spi" in _bad(lambda b: b["radio"]["spi"].pop("miso"))
    assert "colour" in _bad(lambda b: b.update(colour="red"))


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(boards.BoardError, match="HELTEC_V3"):
        boards.load("NOPE")
