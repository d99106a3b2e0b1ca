"""Board definitions (boards/*.json): load them, check the schema and the cross-field rules."""

import json
from functools import cache

from .sources import BOARDS as BOARDS_DIR

SCHEMA = BOARDS_DIR / "schema.json"
# The filesystem partition: MicroPython mounts the data partition named "vfs" (subtype fat, whatever
# filesystem it holds: we put LittleFS there).
FS_PARTITION = "vfs"
# The bootloader and the partition table sit below this offset on every ESP32 chip we support.
FIRST_PARTITION_OFFSET = 0x9000
APP_ALIGN = 0x10000


class BoardError(ValueError):
    """A board file is missing, malformed or inconsistent."""


@cache
def _validator():
    from jsonschema import Draft202012Validator  # here: slow to import, needed once

    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def names() -> list[str]:
    """Every board name under boards/."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json") if p.name != SCHEMA.name)


def load(name: str) -> dict:
    """The checked board definition boards/<name>.json; BoardError says what is wrong."""
    path = BOARDS_DIR / f"{name}.json"
    if not name or "/" in name or not path.is_file():
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(names())}")
    try:
        board = json.loads(path.read_text())
    except ValueError as e:
        raise BoardError(f"{path.name} is not valid JSON: {e}") from None
    return check(board, path.name)


def check(board: dict, where: str = "board") -> dict:
    """Validate against boards/schema.json, then the cross-field rules; return board."""
    errors = sorted(_validator().iter_errors(board), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        at = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise BoardError(f"{where}: {at}: {e.message}")
    problems = consistency_problems(board)
    if problems:
        raise BoardError(f"{where}: " + "; ".join(problems))
    return board


def consistency_problems(board: dict) -> list[str]:
    """Rules across fields: radio pins per chip, pins used twice, partitions, sensors."""
    problems = []
    problems += _radio_problems(board.get("radio"))
    problems += _pin_clashes(board)
    problems += _partition_problems(board)
    for sensor, needs in (("bme280", "i2c"), ("ds18b20", "onewire_pin"), ("battery", "battery")):
        if sensor in board.get("sensors", ()) and board.get(needs) is None:
            problems.append(f"default sensor {sensor} needs {needs}, which is null")
    battery = board.get("battery") or {}
    if "pmu" in battery and not board.get("i2c"):
        problems.append("battery: a power chip (pmu) is read over I2C, but i2c is null")
    if "enable_level" in battery and "enable_pin" not in battery:
        problems.append("battery: enable_level without enable_pin")
    if board.get("name") and board.get("name") != board.get("name", "").upper():
        problems.append("name must be upper case")
    return problems


def _radio_problems(radio) -> list[str]:
    if radio is None:
        return []
    chip = radio["chip"]
    problems = []
    if chip == "sx1262":
        # The SX126x cannot take a command while BUSY is high; DIO1 is its only interrupt line.
        for key in ("busy", "dio1"):
            if radio[key] is None:
                problems.append(f"radio: sx1262 needs {key}")
        if radio["dio0"] is not None:
            problems.append("radio: sx1262 has no dio0 (its interrupt is dio1)")
    elif chip == "sx1276":
        # SX127x signals TxDone/RxDone on DIO0; it has no BUSY line, DIO2 switch or DIO3 TCXO.
        if radio["dio0"] is None:
            problems.append("radio: sx1276 needs dio0")
        if radio["busy"] is not None:
            problems.append("radio: sx1276 has no busy pin")
        if radio["dio2_rf_sw"] or radio["dio3_tcxo_millivolts"] is not None:
            problems.append("radio: dio2_rf_sw and dio3_tcxo_millivolts are SX126x settings")
    return problems


def _pins(board: dict) -> list[tuple[str, int]]:
    pins = []
    for key in ("led_pin", "onewire_pin"):
        if board.get(key) is not None:
            pins.append((key, board[key]))
    for section, keys in (("i2c", ("sda", "scl")), ("battery", ("adc_pin", "enable_pin"))):
        if board.get(section):
            pins += [(f"{section}.{k}", board[section][k]) for k in keys if k in board[section]]
    radio = board.get("radio")
    if radio:
        pins += [(f"radio.spi.{k}", radio["spi"][k]) for k in ("sck", "mosi", "miso")]
        pins += [(f"radio.{k}", radio[k]) for k in ("cs", "reset", "dio0", "dio1", "busy")
                 if radio[k] is not None]
    return pins


def _pin_clashes(board: dict) -> list[str]:
    seen: dict[int, str] = {}
    problems = []
    for name, pin in _pins(board):
        if pin in seen:
            problems.append(f"GPIO{pin} is used by both {seen[pin]} and {name}")
        seen[pin] = name
    return problems


def _partition_problems(board: dict) -> list[str]:
    parts = sorted(board.get("partitions", []), key=lambda p: p["offset"])
    flash = board.get("flash_size", 0)
    problems = []
    end = FIRST_PARTITION_OFFSET
    for p in parts:
        if p["offset"] < end:
            problems.append(f"partition {p['name']} at {p['offset']:#x} overlaps the one before "
                            f"(which ends at {end:#x})")
        if p["type"] == "app" and p["offset"] % APP_ALIGN:
            problems.append(f"app partition {p['name']} must start on a 64 KB boundary")
        end = max(end, p["offset"] + p["size"])
        if p["offset"] + p["size"] > flash:
            problems.append(f"partition {p['name']} ends at {p['offset'] + p['size']:#x}, "
                            f"past the {flash // 1048576} MB flash")
    by_name = {p["name"]: p for p in parts}
    if len(by_name) != len(parts):
        problems.append("partition names must be unique")
    if FS_PARTITION not in by_name or by_name[FS_PARTITION]["type"] != "data":
        problems.append(f"no data partition named {FS_PARTITION!r} for the filesystem")
    subtypes = {p["subtype"] for p in parts}
    apps = [p for p in parts if p["type"] == "app"]
    if not apps:
        problems.append("no app partition")
    if subtypes & {"ota_0", "ota_1"}:
        if not {"ota_0", "ota_1", "ota"} <= subtypes:
            problems.append("an OTA layout needs ota_0, ota_1 and otadata")
        elif len({p["size"] for p in apps if p["subtype"] in ("ota_0", "ota_1")}) != 1:
            problems.append("ota_0 and ota_1 must be the same size")
    elif "ota" in subtypes:
        problems.append("otadata without ota_0/ota_1 slots")
    return problems


def fs_partition(board: dict) -> dict:
    """The filesystem partition (offset, size) of a checked board."""
    return next(p for p in board["partitions"] if p["name"] == FS_PARTITION)


def has_ota(board: dict) -> bool:
    """True if the board's layout has two app slots (a MicroPython runtime can be updated OTA)."""
    return any(p["subtype"] == "ota_0" for p in board["partitions"])
