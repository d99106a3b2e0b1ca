"""A simulated LoRa radio world for the host port: modems, the air between them, gateways.

SIMULATION. No radio exists here; this imitates what matters to the LoRaWAN code above it:
- `SimModem` has the API of micropython-lib's `lora` drivers in their asyncio form
  (`lora.AsyncModem` over `SX1276`/`SX1262`): `configure(lora_cfg)`, `await send(packet)` (returns
  the ticks_ms when transmission ended), `await recv(timeout_ms)` (an `RxPacket` — bytes with
  `.ticks_ms`, `.rssi`, `.snr`, `.valid_crc` — or None), `standby()`, `sleep()`.
- `Medium` carries transmissions for their real airtime (Semtech formula, region_eu868), drops
  those too weak for the receiver's sensitivity at their spreading factor (log-distance path loss),
  and drops packets that overlap in time on the same frequency and spreading factor unless one is
  6 dB stronger (capture effect). Uplinks use normal IQ, downlinks inverted IQ: nodes do not hear
  nodes, gateways do not hear gateways.
- `Gateway` hears uplinks and hands them with their metadata to a network server (nsemu.py); it
  transmits the downlinks the network server schedules at a given time.
Time is the asyncio loop's clock (real time), so duty-cycle waits in the firmware are real waits.
"""

import asyncio
import math
import random
import time

from polylink.lorawan import region
from polylink_host import simclock

TX_POWER_DBM = 14
NOISE_DBM = -117.0  # thermal noise in 125 kHz plus a 6 dB noise figure
# Receiver sensitivity at 125 kHz per spreading factor (SX1276 datasheet table 13, rounded)
SENSITIVITY = {7: -123.0, 8: -126.0, 9: -129.0, 10: -132.0, 11: -134.5, 12: -137.0}
CAPTURE_DB = 6.0


def path_loss_db(distance_m: float, exponent: float = 2.7) -> float:
    """Log-distance path loss at 868 MHz: 31.2 dB at 1 m (free space), then 10 n log10(d)."""
    return 31.2 + 10 * exponent * math.log10(max(distance_m, 1.0))


class RxPacket(bytes):
    """A received packet as the `lora` driver returns it: bytes with reception metadata."""

    ticks_ms: int
    rssi: float
    snr: float
    valid_crc: bool

    def __new__(cls, data, ticks, rssi, snr, crc=True):
        p = super().__new__(cls, data)
        p.ticks_ms, p.rssi, p.snr, p.valid_crc = ticks, rssi, snr, crc
        return p


class _Tx:
    __slots__ = ("src", "data", "freq", "sf", "bw", "start", "end", "uplink", "pos", "power")

    def __init__(self, src, data, freq, sf, bw, start, end, uplink, pos, power):
        self.src, self.data, self.freq, self.sf, self.bw = src, data, freq, sf, bw
        self.start, self.end, self.uplink, self.pos, self.power = start, end, uplink, pos, power


class Medium:
    """The air: who hears whom, for how long, and what collides."""

    def __init__(self, exponent: float = 2.7, shadowing_db: float = 0.0, seed: int = 1):
        self.exponent = exponent
        self.shadowing_db = shadowing_db
        self.rand = random.Random(seed)
        self.gateways: list[Gateway] = []
        self.modems: list[SimModem] = []
        self.recent: list[_Tx] = []
        self.stats = {"sent": 0, "delivered": 0, "collided": 0, "too_weak": 0, "lost": 0}
        self._lose = {True: 0, False: 0}  # uplink? -> transmissions still to be lost

    def lose_next(self, uplinks=0, downlinks=0) -> None:
        """Lose the next transmissions in each direction whole (a burst of interference)."""
        self._lose[True] += uplinks
        self._lose[False] += downlinks

    def rssi(self, a, b, power) -> float:
        d = math.dist(a, b)
        fade = self.rand.gauss(0, self.shadowing_db) if self.shadowing_db else 0.0
        return power - path_loss_db(d, self.exponent) + fade

    def airtime_s(self, n: int, sf: int, bw: int, uplink: bool) -> float:
        dr = region.DATA_RATES.index((sf, bw))
        return region.airtime_us(n, dr, crc=uplink) / 1e6

    def transmit(self, src, data: bytes, cfg: dict, uplink: bool, pos, power) -> _Tx:
        """Start a transmission now and return it; delivery happens at its end."""
        loop = asyncio.get_running_loop()
        sf, bw = cfg["sf"], int(cfg["bw"]) * 1000
        freq = int(round(cfg["freq_khz"] * 1000))
        start = loop.time()
        dur = self.airtime_s(len(data), sf, bw, uplink)
        tx = _Tx(src, bytes(data), freq, sf, bw, start, start + dur, uplink, pos, power)
        self.recent = [t for t in self.recent if t.end > start - 10] + [tx]
        self.stats["sent"] += 1
        loop.call_at(tx.end, self._deliver, tx)
        return tx

    def _collides(self, tx: _Tx, at, rssi: float) -> bool:
        for o in self.recent:
            if o is tx or o.freq != tx.freq or o.sf != tx.sf or o.uplink != tx.uplink:
                continue
            if o.start < tx.end and tx.start < o.end:
                if rssi - self.rssi(o.pos, at, o.power) < CAPTURE_DB:
                    return True
        return False

    def _deliver(self, tx: _Tx) -> None:
        if self._lose[tx.uplink]:
            self._lose[tx.uplink] -= 1
            self.stats["lost"] += 1
            return
        receivers = self.gateways if tx.uplink else self.modems
        for r in receivers:
            if r is tx.src or not r.listening(tx):
                continue
            rssi = self.rssi(tx.pos, r.pos, tx.power)
            if rssi < SENSITIVITY[tx.sf]:
                self.stats["too_weak"] += 1
                continue
            if self._collides(tx, r.pos, rssi):
                self.stats["collided"] += 1
                continue
            self.stats["delivered"] += 1
            # SNR as a LoRa modem reports it: above the noise floor, saturating near +12 dB
            r.receive(tx, round(rssi, 1), round(min(rssi - NOISE_DBM, 12.0), 1))


class SimModem:
    """One node's radio with the micropython-lib `lora` AsyncModem API (see module docstring)."""

    def __init__(self, medium: Medium, pos=(0.0, 0.0), power=TX_POWER_DBM):
        self.medium = medium
        self.pos = pos
        self.power = power
        self.cfg: dict = {}
        self.sent = 0
        self._rx: asyncio.Queue | None = None
        self._window_end = 0.0
        medium.modems.append(self)

    def configure(self, lora_cfg: dict) -> None:
        self.cfg.update(lora_cfg)
        if "output_power" in lora_cfg:
            self.power = lora_cfg["output_power"]

    def standby(self) -> None:
        self._rx = None

    def sleep(self) -> None:
        self._rx = None

    async def send(self, packet, tx_at_ms=None) -> int:
        self._rx = None
        tx = self.medium.transmit(self, bytes(packet), self.cfg, True, self.pos, self.power)
        self.sent += 1
        await asyncio.sleep(tx.end - tx.start)
        # The driver returns the TxDone interrupt's timestamp, the moment the radio finished, not
        # when the task woke up after it: on a busy host the loop may wake this task tens of ms
        # late, and RX1 counted from then would open after the network's downlink had passed.
        # The loop's clock is time.monotonic(), the ticks' source, so the end converts exactly.
        return simclock.ticks_add(0, int(tx.end * 1000))

    def listening(self, tx: _Tx) -> bool:
        # A reception started inside the window is received even if it ends after it.
        if self._rx is None or tx.uplink:
            return False
        c = self.cfg
        return (int(round(c.get("freq_khz", 0) * 1000)) == tx.freq and c.get("sf") == tx.sf
                and int(c.get("bw", "125")) * 1000 == tx.bw and c.get("invert_iq_rx", False)
                and tx.start <= self._window_end)

    def receive(self, tx: _Tx, rssi: float, snr: float) -> None:
        if self._rx is not None:
            self._rx.put_nowait(RxPacket(tx.data, simclock.ticks_ms(), rssi, snr))

    async def recv(self, timeout_ms=None, rx_length=0xFF, rx_packet=None):
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        self._rx = q
        self._window_end = loop.time() + (timeout_ms or 0) / 1000
        try:
            # Wait for the window, then as long as a packet that started in it may still arrive.
            longest = self.medium.airtime_s(64, self.cfg.get("sf", 7),
                                            int(self.cfg.get("bw", "125")) * 1000, False)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that lands
            # with the packet (unixsim.next_line says more).
            async with asyncio.timeout((timeout_ms or 0) / 1000 + longest):
                return await q.get()
        except TimeoutError:
            return None
        finally:
            if self._rx is q:
                self._rx = None


class Gateway:
    """A LoRaWAN gateway: hears uplinks on any channel and SF, transmits scheduled downlinks."""

    def __init__(self, medium: Medium, gateway_id: str, pos=(0.0, 0.0), power=27):
        self.medium = medium
        self.id = gateway_id
        self.eui = gateway_id.upper().replace("-", "")[-16:].rjust(16, "0")
        self.pos = pos
        self.power = power
        self.on_uplink = None  # callable(gateway, data, meta) set by the network server
        self.sent = 0
        self._tx: list[tuple[float, float]] = []  # (start, end) loop times of scheduled downlinks
        medium.gateways.append(self)

    def listening(self, tx: _Tx) -> bool:
        return tx.uplink

    def receive(self, tx: _Tx, rssi: float, snr: float) -> None:
        if self.on_uplink is not None:
            dr = region.DATA_RATES.index((tx.sf, tx.bw))
            self.on_uplink(self, tx.data, {"rssi": rssi, "snr": snr, "freq": tx.freq, "dr": dr,
                                           "sf": tx.sf, "bw": tx.bw, "end": tx.end,
                                           "time": time.time()})

    def free_at(self, at: float, n: int, dr: int) -> bool:
        """True if an n-byte downlink at dr starting at loop time `at` overlaps none scheduled
        (a gateway's one transmitter sends one packet at a time)."""
        end = at + region.airtime_us(n, dr, crc=False) / 1e6
        return all(end <= s or at >= e for s, e in self._tx)

    def schedule(self, data: bytes, at: float, freq: int, dr: int) -> None:
        """Transmit data at loop time `at` (inverted IQ, no CRC: a LoRaWAN downlink)."""
        now = asyncio.get_running_loop().time()
        self._tx = [(s, e) for s, e in self._tx if e > now]
        self._tx.append((at, at + region.airtime_us(len(data), dr, crc=False) / 1e6))
        sf, bw = region.DATA_RATES[dr]
        cfg = {"freq_khz": freq / 1000, "sf": sf, "bw": str(bw // 1000)}
        loop = asyncio.get_running_loop()

        def go():
            self.sent += 1
            self.medium.transmit(self, data, cfg, False, self.pos, self.power)

        loop.call_at(at, go)
