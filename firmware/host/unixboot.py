"""boot.py and main.py of a node on the Unix port (started by unixnode.py; see there)."""

import os
import sys


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
    step = "choosing the app slot"  # what the boot is doing, for the line saying why it failed
    try:
        _boot(root)
        step = "importing the firmware"
        import asyncio

        # The firmware's modules in main.py's order, so the boot's heap peak is the chip's; the
        # simulated hardware (~23 KB of 64-bit heap the chip does not spend) only after the
        # config checks have left the heap, so it does not add to that peak. (Importing the node
        # after the config checks, or the simulation first, was tried: on a tight heap either
        # order fails at a higher heap than this one, docs/benchmarks.md.)
        from polylink import config
        from polylink.node import Node

        step = "loading the config"
        board = config.load_board(root)
        cfg = config.load(root, default_node=node, board=board)
        if cfg.claim is not None:
            raise config.ConfigError("claiming is not simulated on the Unix port")
        step = "loading the simulated hardware"
        from polylink_host.unixhal import UnixHAL

        hal = UnixHAL(node, root, board, cause)
        if runtime_update:
            hal.flash()
        step = "building the node"
        node = Node(hal, cfg)
        _inject(node, (os.getenv("POLYLINK_FAULTS") or "").split(","))
    except Exception as e:
        _boot_failed(root, step, e)
        raise  # the interpreter prints the traceback; the supervisor restarts the node
    asyncio.run(node.run())


def _boot_failed(root, step, e):
    """Say why the boot failed: one line for the supervisor's log (unixsim.py), and the crash
    note (polylink/crash.py) that the next boot that gets as far as running the node sends as
    EVENT 4. A node whose heap is too small for its boot never gets there: the line is then
    all there is, as a serial console's is on a chip. Best effort: the heap is likely full."""
    try:
        import gc

        gc.collect()
        print("polylink: boot failed while %s: %s: %s (heap: %d bytes free of %d)"
              % (step, type(e).__name__, e, gc.mem_free(), gc.mem_free() + gc.mem_alloc()))
        with open(root + "/crash", "w") as f:  # crash.FILE, its format; crash.py not loaded
            f.write(("%s at boot (%s): %s" % (type(e).__name__, step, e))[:60])
    except Exception:  # noqa: BLE001 - MemoryError included: the original error is raised
        pass


def _inject(node, faults):
    """Arm the one-shot faults a test asked for (POLYLINK_FAULTS, unixnode.py)."""
    if "link" in faults:
        node.hal.fail_connects = 1
    if "flash-full" in faults:
        # The first three frames meet a full flash (ENOSPC), as Store.append would raise.
        append = node.store.append
        left = [3]

        def failing_append(buf, n):
            if left[0]:
                left[0] -= 1
                raise OSError(28, "ENOSPC (injected)")
            append(buf, n)

        node.store.append = failing_append
    if "downlink" in faults:
        handle = node.link.on_message
        armed = [True]

        def on_message(topic, msg, retained=False):
            if armed[0]:
                armed[0] = False
                raise MemoryError("memory allocation failed (injected)")
            handle(topic, msg, retained)

        node.link.on_message = on_message
