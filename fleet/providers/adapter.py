"""What every provider adapter builds on: the Uplink it returns, the ProviderError it raises, and
the checks of a provider's JSON that turn a malformed field into that error."""

import base64
import binascii
import json
from dataclasses import dataclass, field

from polylink.lorawan import region as region_eu868

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
    # What the provider's own payload formatter made of the frame (TTS decoded_payload,
    # ChirpStack object), for profiles with the passthrough codec; None if it sent none.
    decoded: dict | None = None
    # The provider's own identity of this uplink message, with DevEUI and FCnt (ChirpStack's
    # deduplicationId, The Things Stack's as:up correlation id): the same message delivered
    # again stores no second reception. None if the message carries none.
    uplink_key: str | None = None


def dr_of(sf, bw):
    """EU868 data rate index of a LoRa spreading factor and bandwidth (None if not one)."""
    try:
        return region_eu868.DATA_RATES.index((sf, bw))
    except ValueError:
        return None


class Reader:
    """Reads one provider's uplink JSON; every complaint starts with the adapter's name."""

    def __init__(self, who: str):
        self.who = who

    def error(self, msg: str) -> ProviderError:
        return ProviderError(f"{self.who}: {msg}")

    def message(self, payload: bytes) -> dict:
        """The payload as a JSON object."""
        try:
            msg = json.loads(payload)
        except ValueError as e:
            raise self.error(f"not JSON: {e}") from None
        if not isinstance(msg, dict):
            raise self.error("not a JSON object")
        return msg

    def number(self, d: dict, key: str, kind=float):
        """d[key] as a number (providers send some as strings), None if absent."""
        v = d.get(key)
        if v is None:
            return None
        try:
            return kind(v)
        except (TypeError, ValueError):
            raise self.error(f"{key} is not a number: {v!r}") from None

    def reception(self, gateway: str, m: dict) -> Reception:
        """A gateway's reception from its metadata (absent RSSI or SNR: 0)."""
        return Reception(gateway, self.number(m, "rssi") or 0.0, self.number(m, "snr") or 0.0)

    def text(self, value, name: str) -> str | None:
        """value if it is a non-empty string, None if absent or empty; else the error."""
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error(f"{name} must be a string, got {value!r}")
        return value

    def dev_eui(self, value, name: str) -> str:
        if not isinstance(value, str) or len(value) != 16:
            raise self.error(f"{name} must be 16 hex digits, got {value!r}")
        return value

    def base64(self, value, name: str) -> bytes:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            raise self.error(f"{name} is not base64") from None
