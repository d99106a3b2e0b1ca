"""Node configuration: config.json and board.json on flash, validated at boot (configschema.py)."""

import json
import os
import sys

CONFIG_FILE = "config.json"
BOARD_FILE = "board.json"
# On a device every KB of heap counts: the validation code is unloaded once the config is checked.
# CPython (host port, thousands of simulated boots) keeps it, re-importing would only cost time.
_UNLOAD = sys.implementation.name == "micropython"


class ConfigError(ValueError):
    """config.json or board.json holds a value the node cannot run with."""


class Config:
    """The validated settings of one node (a plain attribute bag)."""

    def __init__(self):
        # Annotations are for the type checker; MicroPython never evaluates them.
        self.node: str = ""
        self.board: dict = {}
        self.wifi_ssid: str = ""
        self.wifi_password: str = ""
        self.mqtt_host: str = ""
        self.mqtt_port: int = 1883
        self.mqtt_user: str | None = None
        self.mqtt_password: str | None = None
        self.mqtt_tls: dict | None = None
        self.keepalive: int = 60
        self.interval: int = 60
        self.status_interval: int = 300
        self.queue_max: int = 1000
        self.sensors: list = []
        self.bme280_addr: int = 0x76


def _schema():
    from polylink import configschema

    return configschema


def _unload_schema():
    if _UNLOAD:
        sys.modules.pop("polylink.configschema", None)
        pkg = sys.modules.get("polylink")
        if pkg is not None and "configschema" in pkg.__dict__:
            delattr(pkg, "configschema")


def check_node_id(node) -> str:
    """Return node if it is a valid node id ([a-z0-9-]{1,32}), else raise ConfigError."""
    try:
        return _schema().check_node_id(node)
    finally:
        _unload_schema()


def validate_board(board) -> dict:
    """Check a board definition (boards/*.json) and return it."""
    try:
        return _schema().validate_board(board)
    finally:
        _unload_schema()


def validate(raw, board, default_node=None) -> Config:
    """Merge raw (the parsed config.json) over the defaults, check every value, return a Config."""
    try:
        return _schema().validate(raw, board, default_node)
    finally:
        _unload_schema()


def _read_json(path, what):
    try:
        f = open(path)
    except OSError:
        raise ConfigError("%s not found at %s" % (what, path)) from None
    try:
        return json.load(f)
    except ValueError as e:
        raise ConfigError("%s at %s is not valid JSON: %s" % (what, path, e)) from None
    finally:
        f.close()


def load_board(root="") -> dict:
    """Read and validate board.json under the flash root."""
    return validate_board(_read_json(root + "/" + BOARD_FILE, "board definition"))


def load(root="", default_node=None, board=None) -> Config:
    """Read and validate config.json (and board.json unless given) under the flash root."""
    if board is None:
        board = load_board(root)
    raw = _read_json(root + "/" + CONFIG_FILE, "config")
    return validate(raw, board, default_node)


def save(root, changes) -> None:
    """Merge changes (top-level keys) into config.json, replacing the file atomically."""
    path = root + "/" + CONFIG_FILE
    raw = _read_json(path, "config")
    raw.update(changes)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(raw, f)
    replace(tmp, path)


def replace(src, dst) -> None:
    """Rename src over dst (littlefs and POSIX replace atomically; FAT needs dst removed first)."""
    try:
        os.rename(src, dst)
    except OSError:
        os.remove(dst)
        os.rename(src, dst)
