"""Uplinks of non-Polylink LoRaWAN devices in the provider ingest: decode by the node's profile,
dedupe by (node, FCnt) across providers, keep the last raw payloads.

Their frames carry no Polylink seq, so the frame's number is the LoRaWAN FCnt, which both The
Things Stack and ChirpStack report as the full 32-bit counter. A device that rejoins starts its
FCnt at 0 again; that is told from a duplicate (the same uplink through a second provider, or
redelivered by MQTT) by time: a duplicate arrives within DUP_SECONDS of the frame it repeats, a
counter at or below the last one later than that (or more than DUP_WINDOW below it) is a new
life of the counter. It is numbered above every frame of the last life (epoch << 32 | FCnt), so
nothing stored before is overwritten, and an event tells of it.
"""

import logging
import time

from fleet.store import profiles as profile_store

from .decoding import Decoder
from .jscodec import CodecError

log = logging.getLogger("fleet.profiles")
DUP_SECONDS = 30.0
DUP_WINDOW = 64
RELOAD_S = 5.0
# A node's raw payloads are trimmed back to RAW_KEPT once this many more have come: one DELETE
# per node every PRUNE_EVERY frames instead of one per batch (at most RAW_KEPT + PRUNE_EVERY).
PRUNE_EVERY = 20
EV_FCNT_RESET = 3  # the events code of a restarted counter (docs/protocol.md, EVENT codes)


class ProfiledDevices:
    """Which nodes are not on 'polylink', their profiles' decoders, and their FCnt state."""

    def __init__(self, db):
        self.db = db
        self.nodes: dict[str, str] = {}
        self.decoders: dict[str, tuple[int, Decoder | str]] = {}
        self.last_t = profile_store.last_seen_times(db)
        self.raw: list[tuple] = []
        self.unpruned: dict[str, int] = {}
        self.resets = 0
        self.loaded = 0.0
        self.reload()

    def reload(self) -> None:
        """Pick up profile assignments and codec changes (they apply to frames from now on)."""
        self.loaded = time.monotonic()
        self.nodes = profile_store.node_profiles(self.db)
        versions = {p["name"]: p for p in profile_store.list_profiles(self.db)}
        for name, p in versions.items():
            have = self.decoders.get(name)
            if have is None or have[0] != p["version"]:
                try:
                    self.decoders[name] = (p["version"], Decoder(p))
                except (CodecError, ValueError) as e:
                    # Kept as the reason every frame of the profile is bad until it is fixed.
                    self.decoders[name] = (p["version"], f"profile {name}: {e}")

    def profile(self, node: str) -> str | None:
        """The node's profile if it is not 'polylink' (reloaded every RELOAD_S)."""
        if time.monotonic() - self.loaded >= RELOAD_S:
            self.reload()
        return self.nodes.get(node)

    def decode(self, node, profile, up, received_at, provider=None):
        """Readings of one uplink; CodecError (with the codec's text) if they cannot be had."""
        self.raw.append((node, received_at, provider, up.fport, up.fcnt, bytes(up.payload)))
        self.unpruned[node] = self.unpruned.get(node, 0) + 1
        _version, dec = self.decoders.get(profile, (0, f"no device profile named {profile!r}"))
        if isinstance(dec, str):
            raise CodecError(dec)
        readings, _out = dec.decode(up.payload, up.fport, received_at, up.decoded)
        return readings

    def number(self, seqs: dict, node: str, fcnt: int, received_at: float, restarts: list):
        """The frame's number: FCnt in the counter's current life (see the module docstring)."""
        last = seqs.get(node)
        fcnt &= 0xFFFFFFFF
        if last is None:
            seq = fcnt
        else:
            epoch, last_fcnt = last >> 32, last & 0xFFFFFFFF
            seq = (epoch << 32) | fcnt
            since = received_at - self.last_t.get(node, received_at)
            if fcnt <= last_fcnt and (last_fcnt - fcnt > DUP_WINDOW or since > DUP_SECONDS):
                seq = ((epoch + 1) << 32) | fcnt
                self.resets += 1
                text = (f"FCnt reset (device rejoined?): FCnt {fcnt} after {last_fcnt},"
                        f" {since:.0f} s later; numbered as life {epoch + 1}")
                restarts.append((node, received_at, received_at, EV_FCNT_RESET, fcnt, text))
                log.info("node %s: %s", node, text)
        if last is None or seq > last:
            seqs[node] = seq
            self.last_t[node] = received_at
        return seq

    def flush(self) -> None:
        if self.raw:
            prune = [n for n, k in self.unpruned.items() if k >= PRUNE_EVERY]
            profile_store.store_raw(self.db, self.raw, prune)
            for n in prune:
                del self.unpruned[n]
            self.raw = []
