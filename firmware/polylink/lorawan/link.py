"""LoRaWAN Class A over a radio with the micropython-lib `lora` AsyncModem API.

Protocol (frames, keys, counters, MAC) is lorawan.Device; this module owns the timing: transmit
on a channel the duty cycle allows, open RX1 and RX2 after it, join until accepted. Downlinks with
application data are handed to on_downlink(fport, payload).
"""

import asyncio

from polylink.lorawan import BudgetError, LoRaWANError, region
from polylink.lorawan.device import Device
from polylink.proto import TYPE_NAMES, FrameError

_RX_WINDOW_MS = 300  # how long each receive window listens for a preamble to start
# A receive window opens this much before its time. The wait for it is an asyncio sleep, and
# a flash sector erase or a collection of a large heap can hold the loop for tens of ms; a
# window opened after the downlink's preamble has passed hears nothing. The early part costs
# only the radio's receive current for those ms.
_RX_EARLY_MS = 50
_JOIN_BACKOFF_S = 10  # extra wait between join attempts, on top of the duty cycle
_NOACK_BACKOFF_S = 60  # a confirmed frame never acknowledged goes again after 1, 2, 4 .. min
_NOACK_BACKOFF_CAP_S = 3600
# Message types sent as confirmed uplinks unless lorawan.confirmed says otherwise: events
# (alarms) and command results; readings and status go unconfirmed (docs/lorawan.md, airtime).
CONFIRMED_DEFAULT = ("event", "result")
FPORT = 1  # the Polylink frame's FPort (docs/protocol.md)


class LoRaLink:
    """A node's LoRaWAN link; `ready` is set while it has a session (joined or ABP).

    on_downlink(None, payload) gets each application downlink (the node's _on_message).
    """

    def __init__(self, hal, cfg, modem, on_downlink, battery=None, keep=None, slept_ms=0):
        self.hal = hal
        self.modem = modem
        self.on_downlink = on_downlink
        lw = cfg.lorawan
        self.dev = Device(hal.path("lorawan.json"), lw, region, battery=battery,
                          keep=keep and keep[0])
        if keep is None:
            # Off times and MAC answers a deep sleep saved (power.py), less the time slept.
            self.dev.resume(hal.ticks_ms(), slept_ms, hal.ticks_add)
        self.tries = int(lw.get("confirmed_tries", 3))
        self.confirm = 0  # bit per Polylink message type sent confirmed
        for name in lw.get("confirmed", CONFIRMED_DEFAULT):
            self.confirm |= 1 << TYPE_NAMES.index(name.upper())
        self.ready = asyncio.Event()
        if self.dev.joined:
            self.ready.set()
        self.sent = 0  # uplinks (FCnts) sent since boot
        self.retransmissions = 0  # repeated transmissions (no ACK yet, or NbTrans > 1)
        self.acked = 0  # confirmed uplinks acknowledged
        self.unacked = 0  # confirmed uplinks that got no ACK in any of their tries
        self.unconfirmed_budget = 0  # sent unconfirmed: the day's downlinks (ACKs) were used up
        self._noack_rounds = 0
        self.joins = 0  # join-accepts taken since boot
        self.downlinks = 0
        if keep:
            (self.sent, self.retransmissions, self.acked, self.unacked, self.unconfirmed_budget,
             self.downlinks, self.joins, self._noack_rounds) = keep[1]
        self.last_error = ""
        self._busy = asyncio.Lock()
        self.dc_wait = False  # waiting for a sub-band's duty-cycle off time to pass

    def park(self) -> tuple:
        """The link's state for LoRaLink(..., keep=it) after its code was dropped from the heap
        (node.py does it while WiFi carries the queue). Only while joined and idle."""
        return self.dev.park(), (self.sent, self.retransmissions, self.acked, self.unacked,
                                 self.unconfirmed_budget, self.downlinks, self.joins,
                                 self._noack_rounds)

    def max_payload(self) -> int:
        return self.dev.max_payload()

    async def _wait_ms(self, ms):
        if ms > 0:
            await asyncio.sleep(ms / 1000)

    async def _band_wait(self, n, dr=None):
        """Wait until some enabled channel's sub-band may carry n bytes (duty cycle)."""
        hal = self.hal
        while True:
            wait = self.dev.plan(n, hal.ticks_ms(), hal.time() or 0, hal.ticks_diff, dr)[2]
            if not wait:
                return
            self.dc_wait = True  # a sleeping node sleeps through this instead (power.py)
            try:
                await self._wait_ms(wait)
            finally:
                self.dc_wait = False

    async def _tx(self, phy, dr=None):
        """Transmit phy on a channel whose sub-band is free; return (freq, dr, tx end ticks)."""
        hal = self.hal
        dev = self.dev
        await self._band_wait(len(phy), dr)
        freq, dr, _ = dev.plan(len(phy), hal.ticks_ms(), hal.time() or 0, hal.ticks_diff, dr)
        self.modem.configure(region.lora_cfg(freq, dr, True, dev.tx_power_dbm()))
        dev.sent(freq, dr, len(phy), hal.ticks_ms(), hal.time() or 0, hal.ticks_add)
        end = await self.modem.send(phy)
        return freq, dr, end

    async def _rx(self, at, freq, dr):
        """Listen in a receive window opening at ticks `at`; the packet or None."""
        hal = self.hal
        await self._wait_ms(hal.ticks_diff(at, hal.ticks_ms()) - _RX_EARLY_MS)
        self.modem.configure(region.lora_cfg(freq, dr, False))
        # listening for as long after `at` as a window opened on time would
        wait = max(hal.ticks_diff(at, hal.ticks_ms()), 0)
        pkt = await self.modem.recv(timeout_ms=wait + _RX_WINDOW_MS)
        self.modem.standby()
        return pkt

    async def _windows(self, end, freq, rx1, rx2):
        """RX1 then, if nothing came, RX2; rx1/rx2 are (delay ms, freq or None, dr)."""
        add = self.hal.ticks_add
        pkt = await self._rx(add(end, rx1[0]), rx1[1] or freq, rx1[2])
        if pkt is None:
            pkt = await self._rx(add(end, rx2[0]), rx2[1] or freq, rx2[2])
        return pkt

    async def join(self):
        """Send join-requests until a join-accept comes (OTAA); returns at once for ABP."""
        dev = self.dev
        while not dev.joined:
            async with self._busy:
                req = dev.join_request()
                try:
                    freq, dr, end = await self._tx(req)
                except BudgetError as e:
                    self.last_error = str(e)
                    await asyncio.sleep(600)
                    continue
                d1 = region.JOIN_ACCEPT_DELAY1_MS
                # The join-accept comes at the regional defaults (RX2 DR0 at RX2_FREQ): the
                # RX2 settings of an earlier session (TTN: DR3) are not the network's for it.
                pkt = await self._windows(end, freq, (d1, None, dr),
                                          (d1 + 1000, region.RX2_FREQ, region.RX2_DR))
                if pkt is not None:
                    try:
                        dev.join_accept(pkt)
                        self.joins += 1
                        break
                    except LoRaWANError as e:
                        self.last_error = "join: %s" % (e,)
            await asyncio.sleep(_JOIN_BACKOFF_S)
        self.ready.set()

    async def send(self, payload, confirmed=False) -> bool:
        """Send one application payload on FPort 1 as one uplink (one FCnt).

        Unconfirmed: transmitted NbTrans times (LinkADRReq; 1 by default), fewer if a downlink
        comes; True. Confirmed: the same frame, same FCnt, again after ACK_TIMEOUT while no ACK
        came in RX1/RX2, at most `tries` transmissions; True once acknowledged, False if never.
        Every transmission waits for the duty cycle and counts against the daily airtime.
        Raises LoRaWANError when the payload does not fit the data rate, BudgetError when the
        daily airtime budget is used up.
        """
        await self.ready.wait()
        dev = self.dev
        hal = self.hal
        if confirmed and dev.downlinks_today(hal.time() or 0) >= dev.downlink_budget:
            # The ACK would be one more downlink past the day's fair-use budget.
            confirmed = False
            self.unconfirmed_budget += 1
        tries = self.tries if confirmed else dev.nb_trans
        got = []
        acked = False
        async with self._busy:
            # The off time first, then the FCnt: a node that sleeps through the wait (power.py)
            # has used no counter value for a frame it did not send.
            await self._band_wait(13 + dev._fopts_len() + len(payload))
            phy = dev.uplink(payload, FPORT, confirmed)
            self.sent += 1
            for k in range(tries):
                if k:
                    self.retransmissions += 1
                    if confirmed:
                        j = region.ACK_TIMEOUT_JITTER_MS
                        await self._wait_ms(region.ACK_TIMEOUT_MS - j + dev.rand(16) % (2 * j + 1))
                dr = dev.retry_dr(k, len(phy)) if confirmed else dev.dr
                freq, dr, end = await self._tx(phy, dr)
                pkt = await self._windows(end, freq, dev.rx1(dr), dev.rx2())
                if pkt is None:
                    continue
                try:
                    fport, data, ack = dev.downlink(pkt, getattr(pkt, "snr", 0), hal.time())
                except LoRaWANError as e:
                    self.last_error = "downlink: %s" % (e,)
                    continue
                self.downlinks += 1
                if fport == FPORT and data:
                    got.append(data)
                if ack or not confirmed:
                    # Any downlink ends an unconfirmed uplink's repetitions (1.0.4 NbTrans).
                    acked = ack
                    break
        for data in got:
            self.on_downlink(None, data)
        if confirmed:
            if acked:
                self.acked += 1
            else:
                self.unacked += 1
        return acked or not confirmed

    async def _pause(self, node, seconds):
        """Wait up to seconds; return early once WiFi can carry the queue (wifi_first)."""
        for _ in range(int(seconds)):
            if node._wifi_ok():
                return
            await asyncio.sleep(1)

    async def send_head(self, node, idx, n):
        """Send the node's queue head (node._out[:n], record idx); pop it once delivered.

        Message types named in lorawan.confirmed go as confirmed uplinks (docs/lorawan.md). A
        TELEMETRY frame larger than the data rate allows is split by priority into new frames
        queued in its place (split.py); nothing is truncated.
        """
        frame = bytes(memoryview(node._out)[:n])
        limit = self.max_payload()
        if n > limit:
            # Device RAM: the splitter is loaded only for a frame too long for the data rate
            from polylink.lorawan.split import split

            try:
                parts = split(frame, limit, node.seq.take)
            except FrameError:
                # Not a TELEMETRY frame: it waits for WiFi or a faster data rate, never cut.
                await self._pause(node, 5)
                return
            for p in parts:
                node.store.append(p, len(p))
            node.store.delivered(idx)  # as its parts
            return
        try:
            ok = await self.send(frame, bool(self.confirm >> (frame[0] & 0x0F) & 1))
        except BudgetError as e:
            self.last_error = str(e)
            await self._pause(node, 60)  # the day's airtime is used up: wait for WiFi or tomorrow
            return
        except LoRaWANError as e:
            self.last_error = str(e)
            await asyncio.sleep(1)
            return
        if not ok:
            # No ACK after every try: the frame stays at the head and goes again later as a new
            # uplink (new FCnt); its Polylink seq makes a second copy harmless to the fleet.
            self.last_error = "confirmed uplink not acknowledged after %d tries" % self.tries
            wait = _NOACK_BACKOFF_S << min(self._noack_rounds, 6)
            self._noack_rounds += 1
            await self._pause(node, wait if wait < _NOACK_BACKOFF_CAP_S else _NOACK_BACKOFF_CAP_S)
            return
        self._noack_rounds = 0
        node.store.delivered(idx)
        node.sent += 1
        node.lora_sent += 1
