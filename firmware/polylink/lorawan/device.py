"""LoRaWAN 1.0.x Class A end device: frames, join, counters, MAC commands, duty cycle, budgets.

No radio I/O here (lorawan/link.py does the Class A timing on the modem); this module turns
application payloads into PHY payloads and back. The region is a module (region.py) passed in.
State that must survive a reboot or deep sleep (session keys, frame counters, network settings)
lives in one JSON file written atomically; the uplink counter is reserved in blocks so a counter
value is never sent twice, at the cost of a gap of at most one block after a reset.
"""

import json
import random

from micropython import const

from polylink import config

# LoRaWANError and BudgetError are this module's errors too: callers import them from here.
from polylink.lorawan import FCNT_BLOCK, BudgetError, LoRaWANError, crypto, rev
from polylink.store import replace

UNCONFIRMED_UP = const(0x40)
_UNCONFIRMED_DOWN = const(0x60)
CONFIRMED_UP = const(0x80)
_CONFIRMED_DOWN = const(0xA0)
_FCTRL_ADR = const(0x80)
_FCTRL_ADRACKREQ = const(0x40)
_FCTRL_ACK = const(0x20)
_FCTRL_FPENDING = const(0x10)
_MAX_FCNT_GAP = const(16384)
_ADR_ACK_LIMIT = const(64)
_ADR_ACK_DELAY = const(32)
_DAY_S = const(86400)
_LINK_CHECK = const(0x02)  # LinkCheckReq's command id (mac.py walks the answers)

class Device:
    """A LoRaWAN session of one node; keys is the config's lorawan section."""

    def __init__(self, path, keys, region, battery=None, rand=None, keep=None):
        self.path = path
        self.region = region
        self.keys = keys
        self.battery = battery  # callable -> DevStatusAns battery byte (0 external .. 254, 255)
        self.rand = rand if rand is not None else random.getrandbits
        self.uplink_budget_us = int(keys.get("uplink_airtime_s_per_day", 30)) * 1000000
        self.downlink_budget = int(keys.get("downlinks_per_day", 10))
        self.adr = bool(keys.get("adr", True))
        self.link_check = None  # (margin dB, gateways) of the last LinkCheckAns
        self.last_snr = 0
        self.ack_pending = False  # the last downlink was confirmed: ACK it in the next uplink
        self._mac = bytearray()  # answers to send in the next uplink's FOpts
        self._sticky = bytearray()  # RXParamSetupAns/RXTimingSetupAns: repeat until a downlink
        self._band_free = [0] * len(region.BANDS)  # ms tick when each sub-band may send again
        self._dc_free = 0  # aggregated duty cycle (DutyCycleReq) for the whole device
        self._dev_nonce = 0
        self.s = {}
        self._load(keep is None)
        if keep is not None:  # what park() returned: this session, reloaded from lorawan.json
            (self.fcnt_up, mac, sticky, self._band_free, self._dc_free, self.ack_pending,
             self.link_check, self.last_snr) = keep
            self._mac = bytearray(mac)
            self._sticky = bytearray(sticky)

    def park(self) -> tuple:
        """Save the session; return what lives only in RAM (uplink counter, MAC answers not yet
        sent, duty-cycle clocks) for Device(..., keep=it) once this code was unloaded."""
        self._save()
        return (self.fcnt_up, bytes(self._mac), bytes(self._sticky), self._band_free,
                self._dc_free, self.ack_pending, self.link_check, self.last_snr)

    def sleep_save(self, now_ms, ticks_diff) -> None:
        """Before a deep sleep: save the exact next FCnt (no block is skipped at the wake), the
        MAC answers still to send, and each sub-band's remaining off time in ms, which the RAM
        holding the tick clocks does not survive (resume() takes them back)."""
        s = self.s
        s["up"] = self.fcnt_up
        rest = [0] * (len(self._band_free) + 1)
        for i in range(len(self._band_free)):
            rest[i] = max(ticks_diff(self._band_free[i], now_ms), 0)
        rest[-1] = max(ticks_diff(self._dc_free, now_ms), 0)
        s["rest"] = rest
        s["mac"] = bytes(self._mac).hex()
        s["sticky"] = bytes(self._sticky).hex()
        s["ackp"] = self.ack_pending
        self._save()

    def resume(self, now_ms, slept_ms, ticks_add) -> None:
        """After a boot: take back what sleep_save() left. The off times count down by slept_ms
        (0 unless the node woke from its own deep sleep: after any other reset the time that
        passed is unknown, so the whole off time is waited again)."""
        s = self.s
        rest = s.pop("rest", None)
        if rest and len(rest) == len(self._band_free) + 1:
            for i in range(len(self._band_free)):
                if rest[i] > slept_ms:
                    self._band_free[i] = ticks_add(now_ms, rest[i] - slept_ms)
            if rest[-1] > slept_ms:
                self._dc_free = ticks_add(now_ms, rest[-1] - slept_ms)
        self._mac = bytearray(bytes.fromhex(s.pop("mac", "")))
        self._sticky = bytearray(bytes.fromhex(s.pop("sticky", "")))
        self.ack_pending = bool(s.pop("ackp", False))

    # state
    def _defaults(self):
        r = self.region
        return {"nonce": self._dev_nonce, "up": 0, "down": 0, "rx1o": 0, "rx2dr": r.RX2_DR,
                "rx2f": r.RX2_FREQ, "delay": 1, "dr": r.MAX_DR, "pw": 0,
                "ch": list(r.DEFAULT_CHANNELS), "mask": (1 << len(r.DEFAULT_CHANNELS)) - 1,
                "dc": 0, "nb": 1, "day": -1, "air": 0, "dl": 0, "noack": 0}

    def _load(self, reserve=True):
        s = None
        # The .tmp is read only when the file itself is gone: store.replace on FAT removes the
        # old file before renaming the new, complete one, and power may fail in between.
        for p in (self.path, self.path + ".tmp"):
            try:
                with open(p) as f:
                    s = json.load(f)
                break
            except (OSError, ValueError):
                pass  # first boot, or a file we cannot trust: join again
        if s is None:
            s = self._defaults()
            if self.keys.get("dev_addr"):  # ABP: the session is in the config
                s["addr"] = self.keys["dev_addr"]
                s["nwk"] = self.keys["nwk_s_key"]
                s["app"] = self.keys["app_s_key"]
        self._dev_nonce = s.get("nonce", 0)
        self.s = s
        self._set_session()
        if reserve:
            # Counter values below "up" may have been used before the reset: start at the limit.
            self.fcnt_up = s["up"]
            s["up"] += FCNT_BLOCK
            self._save()

    def _set_session(self):
        s = self.s
        if "addr" in s:
            self.dev_addr = rev(s["addr"])
            self.nwk_skey = bytes.fromhex(s["nwk"])
            self.app_skey = bytes.fromhex(s["app"])
        else:
            self.dev_addr = None

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.s, f)
        replace(tmp, self.path)

    @property
    def joined(self) -> bool:
        return self.dev_addr is not None

    @property
    def dr(self) -> int:
        return self.s["dr"]

    # join (OTAA): the code is in join.py, imported here and dropped again to save device RAM:
    # it is needed only while joining
    def join_request(self) -> bytes:
        """A join-request with a fresh DevNonce (a persisted counter: never reused)."""
        from polylink.lorawan import join

        try:
            return join.request(self)
        finally:
            config.unload("lorawan.join")

    def join_accept(self, phy) -> None:
        """Take the join-accept of the last join-request: derive keys, reset counters, settings."""
        from polylink.lorawan import join

        try:
            join.accept(self, phy)
        finally:
            config.unload("lorawan.join")

    # uplinks
    def max_payload(self) -> int:
        """Largest FRMPayload at the current DR with the MAC answers now waiting in FOpts."""
        return self.region.max_app_payload(self.s["dr"], self._fopts_len())

    def _fopts_len(self) -> int:
        n = len(self._mac) + len(self._sticky)
        return n if n <= 15 else 15

    def request_link_check(self) -> None:
        self._mac.append(_LINK_CHECK)

    def uplink(self, payload, fport, confirmed=False) -> bytes:
        """The PHY payload of one data uplink (MAC answers ride along in FOpts)."""
        if not self.joined:
            raise LoRaWANError("not joined")
        if not 1 <= fport <= 223:
            raise LoRaWANError("FPort must be 1..223 for application data, got %d" % fport)
        fopts = (self._sticky + self._mac)[:15]
        if len(payload) > self.region.max_app_payload(self.s["dr"], len(fopts)):
            raise LoRaWANError("%d bytes do not fit DR%d (max %d)" % (
                len(payload), self.s["dr"], self.region.max_app_payload(self.s["dr"], len(fopts))))
        fcnt = self.fcnt_up
        if fcnt >= self.s["up"]:
            self.s["up"] = fcnt + FCNT_BLOCK
            self._save()
        self.fcnt_up = fcnt + 1
        fctrl = len(fopts)
        if self.adr:
            fctrl |= _FCTRL_ADR
            if self.s["noack"] >= _ADR_ACK_LIMIT and self._can_back_off():
                fctrl |= _FCTRL_ADRACKREQ
        if self.ack_pending:
            fctrl |= _FCTRL_ACK
            self.ack_pending = False
        n = 8 + len(fopts) + 1 + len(payload)
        msg = bytearray(n)
        msg[0] = CONFIRMED_UP if confirmed else UNCONFIRMED_UP
        msg[1:5] = self.dev_addr or b""
        msg[5] = fctrl
        msg[6] = fcnt & 0xFF
        msg[7] = (fcnt >> 8) & 0xFF
        msg[8 : 8 + len(fopts)] = fopts
        p = 8 + len(fopts)
        msg[p] = fport
        msg[p + 1 :] = payload
        crypto.crypt_payload(self.app_skey, crypto.UP, self.dev_addr, fcnt, msg, p + 1, n)
        self._mac = self._mac[max(0, len(fopts) - len(self._sticky)) :]
        self._note_no_downlink()
        return bytes(msg) + crypto.data_mic(self.nwk_skey, crypto.UP, self.dev_addr, fcnt,
                                               msg)

    def _default_mask(self) -> int:
        return (1 << len(self.region.DEFAULT_CHANNELS)) - 1

    def _defaults_on(self) -> bool:
        m = self._default_mask()
        return self.s["mask"] & m == m

    def _can_back_off(self) -> bool:
        s = self.s
        return s["pw"] != 0 or s["dr"] > 0 or not self._defaults_on()

    def _note_no_downlink(self):
        # ADR backoff (1.0.x 4.3.1.1): ADR_ACK_CNT counts uplinks (new FCnts, not repetitions)
        # since the last downlink. From ADR_ACK_LIMIT on, ADRACKReq asks the network to answer;
        # after each further ADR_ACK_DELAY without one: full TX power first, then one DR lower;
        # at the lowest DR the default channels are enabled again (1.0.3 4.3.1.1).
        s = self.s
        s["noack"] += 1
        if self.adr and s["noack"] >= _ADR_ACK_LIMIT + _ADR_ACK_DELAY:
            s["noack"] = _ADR_ACK_LIMIT
            if s["pw"]:
                s["pw"] = 0
            elif s["dr"] > 0:
                s["dr"] -= 1
            if s["dr"] == 0 and s["pw"] == 0:
                s["mask"] |= self._default_mask()

    def retry_dr(self, k, phy_len) -> int:
        """DR of transmission k (0 = first) of a confirmed uplink: LoRaWAN 1.0.2 section 18.4
        steps one DR down after every two unacknowledged transmissions, never to a DR the
        frame does not fit (MACPayload = PHY - MHDR - MIC)."""
        m = self.region.MAX_MAC_PAYLOAD
        d = self.s["dr"] - k // 2
        if d < 0:
            d = 0
        while d < self.s["dr"] and m[d] < phy_len - 5:
            d += 1
        return d

    @property
    def nb_trans(self) -> int:
        """Transmissions of each unconfirmed uplink (NbTrans of the last LinkADRReq)."""
        return self.s["nb"]

    # downlinks
    def downlink(self, phy, snr=0, now_s=None):
        """Check and decrypt a data downlink; return (fport, payload, ack) ((None, b"", ack) when
        it carried no application data). MAC commands in it are carried out and answered."""
        if len(phy) < 12:
            raise LoRaWANError("downlink of %d bytes is too short" % len(phy))
        mtype = phy[0] & 0xE0
        if mtype not in (_UNCONFIRMED_DOWN, _CONFIRMED_DOWN):
            raise LoRaWANError("not a data downlink (MHDR %02x)" % phy[0])
        if not self.joined or bytes(phy[1:5]) != self.dev_addr:
            raise LoRaWANError("downlink for another DevAddr")
        s = self.s
        f16 = phy[6] | (phy[7] << 8)
        fcnt = (s["down"] & ~0xFFFF) | f16
        if fcnt < s["down"]:
            fcnt += 0x10000
        if fcnt - s["down"] > _MAX_FCNT_GAP:
            raise LoRaWANError("downlink FCnt %d is a replay or too far ahead of %d"
                               % (f16, s["down"]))
        n = len(phy)
        msg = phy[: n - 4]
        if crypto.data_mic(self.nwk_skey, crypto.DOWN, self.dev_addr, fcnt, msg) != bytes(
            phy[n - 4 :]
        ):
            raise LoRaWANError("downlink MIC mismatch")
        fctrl = phy[5]
        folen = fctrl & 0x0F
        p = 8 + folen
        buf = bytearray(msg)
        fport = None
        if p < len(buf):
            fport = buf[p]
            key = self.nwk_skey if fport == 0 else self.app_skey
            crypto.crypt_payload(key, crypto.DOWN, self.dev_addr, fcnt, buf, p + 1, len(buf))
        s["down"] = fcnt + 1
        s["noack"] = 0
        self.last_snr = snr
        self._sticky = bytearray()  # a Class A downlink arrived: sticky answers are done
        if mtype == _CONFIRMED_DOWN:
            self.ack_pending = True
        self._count_downlink(now_s)
        cmds = buf[8:p]
        payload = b""
        if fport == 0:
            if folen:
                raise LoRaWANError("MAC commands in both FOpts and FPort 0")
            cmds = buf[p + 1 :]
            fport = None
        if cmds:
            # Device RAM: the MAC command code is loaded only while used (like commands.py): most
            # downlinks carry none, and it is a third of this module's heap.
            from polylink.lorawan import mac

            mac.apply(self, cmds)
            config.unload("lorawan.mac")
        elif fport is not None:
            payload = bytes(buf[p + 1 :])
        self._save()
        return fport, payload, bool(fctrl & _FCTRL_ACK)

    def _count_downlink(self, now_s):
        s = self.s
        day = s["day"] if now_s is None else now_s // _DAY_S
        if s["day"] != day:
            s["day"], s["air"], s["dl"] = day, 0, 0
        s["dl"] += 1

    # duty cycle, budgets and channels
    def airtime_today_us(self, now_s) -> int:
        s = self.s
        return s["air"] if s["day"] == now_s // _DAY_S else 0

    def downlinks_today(self, now_s) -> int:
        s = self.s
        return s["dl"] if s["day"] == now_s // _DAY_S else 0

    def plan(self, phy_len, now_ms, now_s, ticks_diff=None, dr=None):
        """(freq, dr, wait_ms) for an uplink of phy_len bytes (at dr, default the current DR);
        BudgetError past the daily budget.

        wait_ms > 0: every enabled channel's sub-band is still within its duty-cycle off time.
        """
        r = self.region
        s = self.s
        if dr is None:
            dr = s["dr"]
        t = r.airtime_us(phy_len, dr)
        if self.airtime_today_us(now_s) + t > self.uplink_budget_us:
            raise BudgetError("daily uplink airtime budget of %d s used up"
                              % (self.uplink_budget_us // 1000000))
        diff = ticks_diff or (lambda a, b: a - b)
        best = None
        wait = 1 << 30
        ch = s["ch"]
        start = self.rand(8) % len(ch)
        for k in range(len(ch)):
            i = (start + k) % len(ch)
            if not (s["mask"] >> i) & 1 or not ch[i]:
                continue
            band = r.band_of(ch[i])
            w = max(diff(self._band_free[band], now_ms), diff(self._dc_free, now_ms), 0)
            if w < wait:
                best, wait = ch[i], w
        if best is None:
            raise LoRaWANError("no enabled channel")
        return best, dr, wait

    def sent(self, freq, dr, phy_len, now_ms, now_s, ticks_add=None) -> int:
        """Account an uplink's airtime to its sub-band, the aggregated duty cycle and the day."""
        r = self.region
        s = self.s
        t = r.airtime_us(phy_len, dr)
        add = ticks_add or (lambda a, b: a + b)
        band = r.band_of(freq)
        off = t * r.BANDS[band][2] // 1000  # ms of time the band must rest, airtime included
        self._band_free[band] = add(now_ms, off)
        self._dc_free = add(now_ms, (t << s["dc"]) // 1000)
        day = now_s // _DAY_S
        if s["day"] != day:
            s["day"], s["air"], s["dl"] = day, 0, 0
        s["air"] += t
        return t

    def rx1(self, dr=None):
        """(delay ms, freq, dr) of the first receive window for an uplink at dr (default: the
        current DR)."""
        r = self.region
        return self.s["delay"] * 1000, None, r.rx1_dr(self.s["dr"] if dr is None else dr,
                                                      self.s["rx1o"])

    def rx2(self):
        s = self.s
        return s["delay"] * 1000 + 1000, s["rx2f"], s["rx2dr"]

    def tx_power_dbm(self) -> int:
        return self.region.tx_power_dbm(self.s["pw"])
