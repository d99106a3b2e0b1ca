"""Codes the node and the fleet share, defined once here (docs/protocol.md, docs/ota.md).

The fleet (CPython) builds its name tables from this module. On the node the OTA modules import
their codes from here; the resident modules (node.py, slots.py, commands.py) keep the few they
need as their own constants, because loading this module would cost the node's heap about 1 KB
of interned names for good. tests/test_codes.py holds the node's and the fleet's copies to it.
Plain ints: no module can inline another's const(), so const() would save nothing here.
"""

# OTA_UP state: how far an update got on the node
OFFERED = 1
DOWNLOADING = 2
VERIFIED = 3
REBOOTING = 4
CONFIRMED = 5
FAILED = 6
ROLLED_BACK = 7
DEFERRED = 8
DECLINED = 9

# OTA_UP reason: why an update failed, was deferred, declined or rolled back
BAD_SIGNATURE = 1
UNKNOWN_KEY = 2
HASH_MISMATCH = 3
BOARD = 4
MICROPYTHON = 5
DOWNLOAD = 6
STORAGE = 7
LOW_BATTERY = 8
WINDOW = 9
BUSY = 10
CRASH_LOOP = 11
NOT_CONFIRMED = 12
BAD_MANIFEST = 13
RUNTIME_ROLLED_BACK = 14
OLDER_RELEASE = 15  # older than the version the node confirmed, and no signed downgrade from it
NO_MEMORY = 16  # the heap could not hold what the update needed (MemoryError); nothing changed

# COMMAND cmd: what a downlink asks the node to do
REBOOT = 1
SET_INTERVAL = 2
IDENTIFY = 3

# STATUS reset: the cause of the last reset, as machine.reset_cause() numbers it
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# OTA keys a node trusts at once (config ota.keys, a release's "keys")
MAX_KEYS = 8
