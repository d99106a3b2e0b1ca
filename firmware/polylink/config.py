"""Node configuration: the validated settings (Config) and the calls that load and save them.

The defaults, the checks and the file handling live in configschema.py, which is imported for each
call and dropped again on MicroPython, so the node keeps only this small module in its heap.
"""

import sys

CONFIG_FILE = "config.json"
BOARD_FILE = "board.json"
# On a device every KB of heap counts; CPython (host port, thousands of simulated boots) keeps the
# schema loaded, as re-importing it would only cost time.
_UNLOAD = sys.implementation.name == "micropython"


class ConfigError(ValueError):
    """config.json or board.json holds a value the node cannot run with."""


class Config:
    """The validated settings of one node; the class values are placeholders until validate()."""

    # Annotations are for the type checker; MicroPython never evaluates them.
    node: str = ""
    board: dict = {}
    wifi_ssid: str = ""
    wifi_password: str = ""
    mqtt_host: str = ""
    mqtt_port: int = 1883
    mqtt_user: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: dict | None = None
    keepalive: int = 60
    interval: int = 60
    status_interval: int = 300
    queue_max: int = 1000
    sensors: list = []
    bme280_addr: int = 0x76
    ota: dict = {}  # the "ota" section, defaults filled in (configschema.DEFAULTS)
    ota_keys: dict = {}
    lorawan: dict | None = None
    link_policy: str = "wifi"  # wifi | lorawan | wifi_first (LoRaWAN while WiFi is down)
    claim: dict | None = None
    power: dict = {}  # the "power" section, defaults filled in (configschema.DEFAULTS)


def _schema():
    from polylink import configschema

    return configschema


def unload(name):
    """Drop polylink.<name> (e.g. "ota.slots") from the heap (MicroPython only); the next import
    loads it again."""
    if _UNLOAD:
        full = "polylink." + name
        sys.modules.pop(full, None)
        parent, _, leaf = full.rpartition(".")
        pkg = sys.modules.get(parent)
        if pkg is not None and leaf in pkg.__dict__:
            delattr(pkg, leaf)


def check_node_id(node) -> str:
    """Return node if it is a valid node id ([a-z0-9-]{1,32}), else raise ConfigError."""
    try:
        return _schema().check_node_id(node)
    finally:
        unload("configschema")


def validate_board(board) -> dict:
    """Check a board definition (boards/*.json) and return it."""
    try:
        return _schema().validate_board(board)
    finally:
        unload("configschema")


def validate(raw, board, default_node=None) -> Config:
    """Merge raw (the parsed config.json) over the defaults, check every value, return a Config."""
    try:
        return _schema().validate(raw, board, default_node)
    finally:
        unload("configschema")


def load_board(root="") -> dict:
    """Read and validate board.json under the flash root."""
    try:
        return _schema().load_board(root)
    finally:
        unload("configschema")


def load(root="", default_node=None, board=None) -> Config:
    """Read and validate config.json (and board.json unless given) under the flash root."""
    try:
        return _schema().load(root, default_node, board)
    finally:
        unload("configschema")


def save(root, changes, section=None) -> None:
    """Merge changes into config.json (top-level keys, or keys of one section such as "ota"),
    check the result, and replace the file atomically."""
    try:
        _schema().save(root, changes, section)
    finally:
        unload("configschema")
