"""Providers: the networks that carry a node's frames, one adapter module each.

An adapter turns its network's uplink messages into `Uplink`s (the frame plus radio metadata) and
frames into its downlink messages. `ADAPTERS` is the one place a new adapter is registered.
"""

from dataclasses import dataclass, field

from . import chirpstack, mqtt, tts

ADAPTERS = {"mqtt": mqtt, "tts": tts, "chirpstack": chirpstack}
LORAWAN_KINDS = ("tts", "chirpstack")
FPORT = 1  # the Polylink frame's FPort in both directions (docs/protocol.md)


class ProviderError(ValueError):
    """A provider message or setting is malformed; the text says which field and why."""


@dataclass
class Reception:
    """One gateway's reception of an uplink."""

    gateway: str
    rssi: float | None
    snr: float | None


@dataclass
class Uplink:
    """What an adapter extracts from one provider uplink message."""

    ext_id: str  # DevEUI, upper-case hex: the node's transport identity on this provider
    device_id: str  # the provider's own device name (TTS device_id; ChirpStack: the DevEUI)
    fport: int
    fcnt: int
    payload: bytes
    confirmed: bool = False
    sf: int | None = None
    bw: int | None = None
    dr: int | None = None
    freq: int | None = None
    airtime: float | None = None  # seconds
    receptions: list[Reception] = field(default_factory=list)


def dr_of(sf, bw):
    """EU868 data rate index of a LoRa spreading factor and bandwidth (None if not one)."""
    from polylink.lorawan import region as region_eu868

    try:
        return region_eu868.DATA_RATES.index((sf, bw))
    except ValueError:
        return None
