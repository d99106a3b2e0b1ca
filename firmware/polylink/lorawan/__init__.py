"""What the LoRaWAN modules share (LoRaWAN 1.0.x): errors, the uplink counter block and byte
order. device.py, join.py, mac.py and link.py import from here, never from each other.

The one subpackage __init__ that is not empty: every LoRaWAN module loads it anyway (a node imports
the package only through lorawan/link.py), so what they share costs no module of its own in RAM.
"""

from micropython import const

FCNT_BLOCK = const(32)  # uplink counter values reserved per flash write


class LoRaWANError(ValueError):
    """A frame was rejected (bad MIC, wrong address, replayed counter) or cannot be built."""


class BudgetError(LoRaWANError):
    """Sending now would break the duty cycle or the node's daily airtime budget."""


def rev(hexstr) -> bytes:
    """EUIs and DevAddr are written big-endian by people and sent little-endian on air."""
    b = bytes.fromhex(hexstr)
    return bytes(b[i] for i in range(len(b) - 1, -1, -1))


def le(buf, off, n) -> int:
    v = 0
    for i in range(n - 1, -1, -1):
        v = (v << 8) | buf[off + i]
    return v
