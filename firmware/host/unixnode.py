"""Boot one simulated node on the MicroPython Unix port: what boot.py and main.py do on the chip.

    micropython -X heapsize=N firmware/host/unixnode.py

Started by polylink_host.unixsim, which passes in the environment: POLYLINK_LIB (a directory
holding `polylink` and `polylink_host`), POLYLINK_ROOT (the node's flash directory),
POLYLINK_NODE and POLYLINK_CAUSE (the reset cause the ROM would report), and for tests
POLYLINK_FAULTS: a comma list of one-shot injected faults, "link" (the first connect fails with
MemoryError, as allocating its buffers on a full heap would) and "downlink" (handling the first
downlink fails with MemoryError, as loading commands.py on a full heap would), "flash-full" (the
first three frames cannot be queued: the flash is full). An uncaught
error ends the process with status 1, as an uncaught error ends main.py on the chip; the
supervisor then restarts the node as the unfed watchdog would.
"""

import os
import sys

# Not this script's folder: only the firmware packages, compiled as a node's flash holds them.
sys.path[0] = os.getenv("POLYLINK_LIB")
# Everything else is compiled (unixboot.mpy): this file is compiled at start, in the node's heap.
from polylink_host import unixboot  # noqa: E402

unixboot.main()
