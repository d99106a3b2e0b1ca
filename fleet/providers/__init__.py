"""Providers: the networks that carry a node's frames, one adapter module each.

An adapter turns its network's uplink messages into `Uplink`s (the frame plus radio metadata) and
frames into its downlink messages. `ADAPTERS` is the one place a new adapter is registered.
"""

from . import chirpstack, mqtt, tts
from .adapter import FPORT, ProviderError, Reception, Uplink, dr_of

ADAPTERS = {"mqtt": mqtt, "tts": tts, "chirpstack": chirpstack}
LORAWAN_KINDS = ("tts", "chirpstack")
__all__ = ["ADAPTERS", "FPORT", "LORAWAN_KINDS", "ProviderError", "Reception", "Uplink", "dr_of"]
