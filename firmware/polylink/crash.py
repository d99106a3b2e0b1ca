"""Why the previous run ended: noted in flash before a crash, sent as EVENT 4 after the boot.

Loaded at boot and on a crash only (node.py), then dropped again: a running node keeps none of it.
"""

EV_CRASHED = 4  # EVENT code, first after a boot: why the previous run ended (docs/firmware.md)
WDT_RESET = 3  # codes.WDT_RESET: an uncaught error ends main.py, then the watchdog resets
FILE = "crash"


def report(node):
    """Queue an EVENT saying why the previous run ended, if it crashed; then forget it."""
    path = node.hal.path(FILE)
    try:
        with open(path) as f:
            text = f.read(60)
    except OSError:
        return
    if node.reset_cause == WDT_RESET:  # a crash, not a reset the firmware asked for
        from polylink import proto

        node.emit(proto.EVENT, {"code": EV_CRASHED, "value": node.reset_cause, "text": text})
    try:
        import os

        os.remove(path)
    except OSError:
        pass


def note(node, e):
    """Keep why this run ends for the next boot's EVENT; best effort, the heap may be full.
    (A reset the firmware asked for, the host port's SimReset, is noted too: the next boot
    reports the note only after a watchdog reset.)"""
    try:
        with open(node.hal.path(FILE), "w") as f:
            f.write(("%s: %s" % (type(e).__name__, e))[:60])
    except Exception:  # noqa: BLE001 - MemoryError included: the reset goes on regardless
        pass
