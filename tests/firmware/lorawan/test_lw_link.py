"""lw_link.py over a scripted radio: confirmed retransmissions, NbTrans, the queue head."""

from _check import eq
from _fw import rmtree, tmpdir
from polylink.lorawan import crypto as lw_crypto
from polylink.lorawan import region as eu
from polylink.lorawan.link import LoRaLink

_NWK = "2B7E151628AED2A6ABF7158809CF4F3C"
_APP = "000102030405060708090A0B0C0D0E0F"
_ABP = {"dev_eui": "02A1B2C3D4E5F602", "dev_addr": "26011BDA", "nwk_s_key": _NWK,
        "app_s_key": _APP}
_ADDR = bytes((0xDA, 0x1B, 0x01, 0x26))
_DAY = 1767225600


def _down(fcnt, ack=False, fport=None, payload=b""):
    """A downlink as the network server builds it (ACK bit, optional application data)."""
    msg = bytearray((0x60,)) + _ADDR + bytes((0x20 if ack else 0, fcnt & 0xFF, fcnt >> 8))
    if fport is not None:
        p = len(msg)
        msg += bytes((fport,)) + payload
        lw_crypto.crypt_payload(bytes.fromhex(_APP), 1, _ADDR, fcnt, msg, p + 1, len(msg))
    return bytes(msg) + lw_crypto.data_mic(bytes.fromhex(_NWK), 1, _ADDR, fcnt, bytes(msg))


class _HAL:
    def __init__(self, root):
        self.root = root
        self.now = 1000

    def path(self, name):
        return self.root + "/" + name

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, d):
        return a + d

    def time(self):
        return _DAY


class _Modem:
    """Records transmissions; each receive window takes the next scripted reply (None: quiet)."""

    def __init__(self, hal, replies=()):
        self.hal = hal
        self.replies = list(replies)
        self.cfg = {}
        self.sent = []  # (phy, sf, ticks at the start)
        self.windows = 0
        self.opened = []  # (ticks when the window opened, its timeout_ms)

    def configure(self, cfg):
        self.cfg = cfg

    async def send(self, phy):
        self.sent.append((bytes(phy), self.cfg["sf"], self.hal.now))
        dr = eu.DATA_RATES.index((self.cfg["sf"], int(self.cfg["bw"]) * 1000))
        self.hal.now += eu.airtime_us(len(phy), dr) // 1000
        return self.hal.now

    async def recv(self, timeout_ms=None):
        self.windows += 1
        self.opened.append((self.hal.now, timeout_ms))
        return self.replies.pop(0) if self.replies else None

    def standby(self):
        pass


class _Cfg:
    def __init__(self, **kw):
        self.lorawan = dict(_ABP, **kw)


class _Link(LoRaLink):
    async def _wait_ms(self, ms):  # a manual clock: waits pass at once
        if ms > 0:
            self.hal.now += ms


def _link(replies=(), **kw):
    d = tmpdir("lwl")
    hal = _HAL(d)
    got = []
    lk = _Link(hal, _Cfg(**kw), _Modem(hal, replies), lambda t, m: got.append(m))
    lk.dev.rand = lambda n: 0
    return lk, got, d


def _fcnt(phy):
    return phy[6] | phy[7] << 8


async def test_confirmed_uplink_is_sent_again_with_the_same_fcnt_until_acked():
    # first transmission: RX1 and RX2 quiet; second: the ACK (with a command) in RX1
    lk, got, d = _link([None, None, _down(0, ack=True, fport=1, payload=b"cmd")])
    try:
        eq(await lk.send(b"\x22\x00\x01", confirmed=True), True, "acknowledged")
        sent = lk.modem.sent
        eq(len(sent), 2, "one retransmission")
        eq(sent[0][0], sent[1][0], "the very same frame")
        eq((sent[0][0][0], _fcnt(sent[1][0])), (0x80, 0), "confirmed, FCnt 0 both times")
        gap = sent[1][2] - sent[0][2]
        rx2_end = 2000 + eu.airtime_us(len(sent[0][0]), 5) // 1000
        # ACK_TIMEOUT after RX2 (2 s - 1 s at rand 0), and the 1 % duty cycle of the sub-band
        if gap < rx2_end + eu.ACK_TIMEOUT_MS - eu.ACK_TIMEOUT_JITTER_MS:
            raise AssertionError("retransmitted %d ms after the first, before ACK_TIMEOUT" % gap)
        if gap < eu.airtime_us(len(sent[0][0]), 5) * 100 // 1000:
            raise AssertionError("retransmitted inside the duty-cycle off time (%d ms)" % gap)
        eq((lk.retransmissions, lk.acked, lk.unacked, lk.sent), (1, 1, 0, 1))
        eq(got, [b"cmd"], "the ACK's data went to the command handler")
        eq(_fcnt(lk.dev.uplink(b"x", 1)), 1, "the next uplink takes the next FCnt")
    finally:
        rmtree(d)


async def test_confirmed_uplink_gives_up_after_its_tries_stepping_the_dr_down():
    lk, _, d = _link(confirmed_tries=4)
    try:
        eq(await lk.send(b"\x22\x00\x01", confirmed=True), False, "never acknowledged")
        eq([sf for _, sf, _ in lk.modem.sent], [7, 7, 8, 8], "DR5, DR5, DR4, DR4")
        eq(len({p for p, _, _ in lk.modem.sent}), 1, "one frame, one FCnt")
        eq((lk.retransmissions, lk.acked, lk.unacked), (3, 0, 1))
        eq(lk.modem.windows, 8, "RX1 and RX2 after each")
    finally:
        rmtree(d)


async def test_unconfirmed_uplink_repeats_nbtrans_times_unless_a_downlink_comes():
    lk, _, d = _link()
    try:
        lk.dev.s["nb"] = 3
        eq(await lk.send(b"\x20\x00\x01"), True)
        eq(len(lk.modem.sent), 3, "NbTrans 3")
        eq(lk.modem.sent[0][0][0], 0x40, "unconfirmed")
        lk.modem.sent.clear()
        lk.modem.replies = [None, None, _down(0)]  # a downlink after the second transmission
        eq(await lk.send(b"\x20\x00\x02"), True)
        eq(len(lk.modem.sent), 2, "a downlink ends the repetitions")
        eq(lk.retransmissions, 3)
    finally:
        rmtree(d)


async def test_confirmed_goes_unconfirmed_once_the_days_downlinks_are_used():
    lk, _, d = _link(downlinks_per_day=2)
    try:
        s = lk.dev.s
        s["day"], s["dl"] = _DAY // 86400, 2
        eq(await lk.send(b"\x22\x00\x01", confirmed=True), True)
        eq((lk.modem.sent[0][0][0], len(lk.modem.sent)), (0x40, 1), "unconfirmed, once")
        eq(lk.unconfirmed_budget, 1)
    finally:
        rmtree(d)


class _Store:
    def __init__(self):
        self.popped = []

    def delivered(self, idx):
        self.popped.append(idx)


class _Node:
    def __init__(self, frame):
        self._out = bytearray(frame)
        self.store = _Store()
        self.sent = self.lora_sent = 0

    def _wifi_ok(self):
        return True  # pauses end at once


async def test_queue_head_confirmed_by_message_type_and_kept_until_acked():
    lk, _, d = _link([None, None, _down(0, ack=True)], confirmed_tries=2)
    try:
        tel = _Node(b"\x20\x00\x07\x01\x02")  # TELEMETRY: unconfirmed by default
        await lk.send_head(tel, 4, 5)
        eq((lk.modem.sent[0][0][0], tel.store.popped), (0x40, [4]))
        ev = _Node(b"\x22\x00\x08\x01")  # EVENT: confirmed by default
        lk.modem.replies = []
        await lk.send_head(ev, 5, 4)
        eq([p[0] for p, _, _ in lk.modem.sent[1:]], [0x80, 0x80], "confirmed, two tries")
        eq(ev.store.popped, [], "not acknowledged: stays queued")
        lk.modem.replies = [_down(0, ack=True)]
        await lk.send_head(ev, 5, 4)
        eq((ev.store.popped, ev.lora_sent), ([5], 1), "acknowledged: popped")
        eq(_fcnt(lk.modem.sent[-1][0]), 2, "the second round is a new uplink")
    finally:
        rmtree(d)


async def test_receive_windows_open_early_and_listen_their_full_length_after_a_late_wake():
    # A busy loop wakes the waiting task late; the windows must still span their time.
    for late_ms in (0, 30, 49):
        lk, _, d = _link()
        try:

            async def wait(ms, lk=lk, late_ms=late_ms):
                if ms > 0:
                    lk.hal.now += ms + late_ms

            lk._wait_ms = wait
            await lk.send(b"\x20\x00\x01")
            end = lk.modem.sent[0][2] + eu.airtime_us(len(lk.modem.sent[0][0]), 5) // 1000
            eq(len(lk.modem.opened), 2, "RX1 and RX2")
            for k in (0, 1):
                opened, timeout = lk.modem.opened[k]
                at = end + eu.RECEIVE_DELAY1_MS * (k + 1)  # RX1, then RX2 a second later
                if not (at - 50 <= opened <= at and opened + timeout >= at + 300):
                    raise AssertionError("woken %d ms late: window [%d, %d] for a downlink at %d"
                                         % (late_ms, opened, opened + timeout, at))
        finally:
            rmtree(d)


async def test_confirmed_types_come_from_config():
    lk, _, d = _link(confirmed=["telemetry"])
    try:
        await lk.send_head(_Node(b"\x22\x00\x08\x01"), 0, 4)
        await lk.send_head(_Node(b"\x20\x00\x09\x01"), 1, 4)
        eq([p[0] for p, _, _ in lk.modem.sent[:1]], [0x40], "EVENT unconfirmed")
        eq(lk.modem.sent[1][0][0], 0x80, "TELEMETRY confirmed")
    finally:
        rmtree(d)


def _manual(lk):
    """The node's own LoRaLink on the manual clock, as _Link does."""

    async def wait(ms):
        if ms > 0:
            lk.hal.now += ms

    lk._wait_ms = wait
    return lk


async def test_dual_node_parks_the_lorawan_code_on_wifi_and_resumes_the_same_session():
    import json
    import sys

    from _fw import FakeHAL, board
    from polylink import config
    from polylink.node import Node

    d = tmpdir("lwpark")
    try:
        b = board()
        b["radio"] = {"chip": "sx1276"}
        with open(d + "/config.json", "w") as f:
            json.dump({"node": "t-1", "mqtt": {"host": "h"}, "lorawan": _ABP,
                       "link_policy": "wifi_first"}, f)

        class RadioHAL(FakeHAL):
            def lora_modem(self):
                return _Modem(self)

        hal = RadioHAL(d, b)
        node = Node(hal, config.load(d, board=b))
        eq(node.link.drop_idle, True, "wifi_first: MQTT code dropped while WiFi is down")
        lk = _manual(node.lora)
        await lk.send(b"\x20\x00\x01")
        lk.dev.request_link_check()  # a MAC request waiting for the next uplink
        lk.joins, lk.downlinks = 1, 2  # as if it had joined and taken two downlinks
        with open(d + "/lorawan.json") as f:
            up_limit = json.load(f)["up"]
        node._lora_park()
        eq((node.lora, node.lora_ready()), (None, True), "parked, session kept")
        if sys.implementation.name == "micropython":
            eq([m for m in ("lorawan", "lw_link", "lw_crypto", "region_eu868")
                if "polylink." + m in sys.modules], [], "LoRaWAN code left the heap")
        lk = _manual(node._lora_load())
        eq((lk.dev.fcnt_up, lk.sent, lk.joins, lk.downlinks, lk.ready.is_set()), (1, 1, 1, 2, True),
           "same counters, joined")
        with open(d + "/lorawan.json") as f:
            eq(json.load(f)["up"], up_limit, "no counter block spent on reloading")
        await lk.send(b"\x20\x00\x02")
        phy = lk.modem.sent[-1][0]
        eq((_fcnt(phy), phy[5] & 0x0F, phy[8]), (1, 1, 0x02), "FCnt 1, the LinkCheckReq kept")
    finally:
        rmtree(d)


# A join-accept for _OTAA's AppKey as TTN sends it (DLSettings 0x03: RX2 DR3, SF9), built like
# the ones in test_lorawan.py (encrypted with AES decrypt, which the device does not have).
_OTAA = {"dev_eui": "02A1B2C3D4E5F601", "join_eui": "70B3D57ED0000001",
         "app_key": "00112233445566778899AABBCCDDEEFF"}
_ACCEPT_TTN = bytes.fromhex("205428ef533e696a0af40b8e9f07517e8f")


class _Listening(_Modem):
    """Also records (sf, freq Hz) of every receive window."""

    async def recv(self, timeout_ms=None):
        self.heard = getattr(self, "heard", [])
        self.heard.append((self.cfg["sf"], int(self.cfg["freq_khz"] * 1000)))
        return await _Modem.recv(self, timeout_ms)


class _OtaaCfg:
    lorawan = _OTAA


async def test_join_accept_rx2_at_the_default_then_the_data_rate_it_set():
    d = tmpdir("lwl")
    try:
        hal = _HAL(d)
        modem = _Listening(hal, [None, _ACCEPT_TTN])  # RX1 quiet, the join-accept in RX2
        lk = _Link(hal, _OtaaCfg(), modem, lambda t, m: None)
        lk.dev.rand = lambda n: 0
        lk.dev.s["rx2dr"] = 3  # left by an earlier session: not what a join-accept comes at
        await lk.join()
        eq(lk.joins, 1, "joined")
        eq(modem.heard[1], (12, eu.RX2_FREQ), "join-accept RX2: DR0 (SF12), 869.525 MHz")
        eq((lk.dev.s["rx1o"], lk.dev.s["rx2dr"]), (0, 3), "DLSettings applied")
        eq(await lk.send(b"\x20\x00\x01"), True)
        eq(modem.heard[3], (9, eu.RX2_FREQ), "data RX2: DR3 (SF9) as the join-accept said")
        eq(modem.heard[2][0], modem.sent[-1][1], "RX1 at the uplink's DR (offset 0)")
    finally:
        rmtree(d)
