"""Boot one simulated node on the MicroPython Unix port: what boot.py and main.py do on the chip.

    micropython -X heapsize=N firmware/host/unixnode.py

Started by polylink_host.unixsim, which passes in the environment: POLYLINK_LIB (a directory
holding `polylink` and `polylink_host`), POLYLINK_ROOT (the node's flash directory),
POLYLINK_NODE and POLYLINK_CAUSE (the reset cause the ROM would report). An uncaught error ends
the process with status 1, as an uncaught error ends main.py on the chip; the supervisor then
restarts the node as the unfed watchdog would.
"""

import os
import sys

sys.path[0] = os.getenv("POLYLINK_LIB")  # not this script's folder: only the firmware packages


def _boot(root):
    """boot.py: choose the app slot an OTA update left (docs/ota.md)."""
    from polylink.ota import slots

    d = slots.boot(root)
    if d:
        for name in list(sys.modules):
            if name == "polylink" or name.startswith("polylink."):
                del sys.modules[name]
        sys.path.insert(0, d)
    return d


def main():
    root = os.getenv("POLYLINK_ROOT")
    node = os.getenv("POLYLINK_NODE")
    cause = int(os.getenv("POLYLINK_CAUSE") or 1)
    try:
        os.stat(root + "/.esp32")
        runtime_update = True  # a runtime image was written: the bootloader runs at the reset
    except OSError:
        runtime_update = False
    _boot(root)
    import asyncio

    from polylink import config
    from polylink.node import Node
    from polylink_host.unixhal import UnixHAL

    board = config.load_board(root)
    hal = UnixHAL(node, root, board, cause)
    if runtime_update:
        hal.flash()
    cfg = config.load(root, default_node=node, board=board)
    if cfg.claim is not None:
        raise config.ConfigError("claiming is not simulated on the Unix port")
    asyncio.run(Node(hal, cfg).run())


main()
