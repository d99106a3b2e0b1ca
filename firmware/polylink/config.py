"""Node configuration: the calls that load, check and save the settings (Config, settings.py).

The defaults, the checks and the file handling live in configschema.py, which is imported for each
call and dropped again on MicroPython, so the node keeps only this small module in its heap.
"""

import sys

from polylink.settings import BOARD_FILE, CONFIG_FILE, Config, ConfigError  # noqa: F401 - the API

# On a device every KB of heap counts; CPython (host port, thousands of simulated nodes) keeps
# modules loaded, as re-importing them would only cost time.
_UNLOAD = sys.implementation.name == "micropython"


def _schema():
    # Device RAM: the schema is loaded for each call and dropped again after it.
    from polylink import configschema

    return configschema


def unload(name):
    """Drop polylink.<name> and, for a subpackage ("lorawan"), every module loaded from it.

    The names interned by their code stay (MicroPython never frees them); the code and its
    data go, once nothing else refers to them.
    """
    if not _UNLOAD:
        return
    full = "polylink." + name
    sub = full + "."
    for m in list(sys.modules):
        if m == full or m.startswith(sub):
            del sys.modules[m]
            parent, _, leaf = m.rpartition(".")
            pkg = sys.modules.get(parent)  # the package keeps its submodule as an attribute
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
