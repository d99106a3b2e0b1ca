"""OTAA join of a lorawan.Device (LoRaWAN 1.0.x section 6.2.2-6.2.5): the join-request with a
persisted DevNonce, the join-accept checked and turned into a session.

Loaded by Device.join_request()/join_accept() only while joining and dropped again on
MicroPython: a node with a session (joined before, or ABP) never needs this code.
"""

from micropython import const

from polylink.lorawan import FCNT_BLOCK, LoRaWANError, crypto, le, rev

_JOIN_REQUEST = const(0x00)
_JOIN_ACCEPT = const(0x20)


def request(self) -> bytes:
    """A join-request with a fresh DevNonce (a persisted counter: never reused)."""
    k = self.keys
    if "app_key" not in k:
        raise LoRaWANError("OTAA needs lorawan.app_key, dev_eui and join_eui in config.json")
    self._dev_nonce = (self._dev_nonce + 1) & 0xFFFF
    self.s["nonce"] = self._dev_nonce
    self._save()
    msg = bytearray(19)
    msg[0] = _JOIN_REQUEST
    msg[1:9] = rev(k["join_eui"])
    msg[9:17] = rev(k["dev_eui"])
    msg[17] = self._dev_nonce & 0xFF
    msg[18] = self._dev_nonce >> 8
    return bytes(msg) + crypto.join_mic(bytes.fromhex(k["app_key"]), msg)


def accept(self, phy) -> None:
    """Take the join-accept of the last join-request: derive keys, reset counters, settings."""
    if not phy or phy[0] & 0xE0 != _JOIN_ACCEPT:
        raise LoRaWANError("not a join-accept")
    app_key = bytes.fromhex(self.keys["app_key"])
    clear = crypto.decrypt_join_accept(app_key, phy)
    n = len(clear)
    if crypto.join_mic(app_key, clear[: n - 4]) != bytes(clear[n - 4 :]):
        raise LoRaWANError("join-accept MIC mismatch")
    nonce = bytes((self._dev_nonce & 0xFF, self._dev_nonce >> 8))
    nwk, app = crypto.session_keys(app_key, clear[1:4], clear[4:7], nonce)
    s = self._defaults()
    s["addr"] = bytes(clear[i] for i in (10, 9, 8, 7)).hex()
    s["nwk"] = nwk.hex()
    s["app"] = app.hex()
    # DLSettings: the network's RX1DROffset and RX2 data rate (TTN EU868: RX2 DR3, SF9). A value
    # this region does not have keeps the default rather than failing every later window.
    r = self.region
    rx1o, rx2dr = (clear[11] >> 4) & 0x07, clear[11] & 0x0F
    if rx1o <= r.RX1_DR_OFFSET_MAX and rx2dr < len(r.DATA_RATES):
        s["rx1o"], s["rx2dr"] = rx1o, rx2dr
    s["delay"] = (clear[12] & 0x0F) or 1
    s["day"], s["air"], s["dl"] = self.s["day"], self.s["air"], self.s["dl"]
    if n == 33 and clear[28] == 0:  # CFList type 0: five more channel frequencies
        for i in range(5):
            f = le(clear, 13 + 3 * i, 3) * 100
            if f:
                s["ch"].append(f)
                s["mask"] |= 1 << (len(s["ch"]) - 1)
    s["up"] = FCNT_BLOCK
    self.fcnt_up = 0
    self.s = s
    self._set_session()
    self._mac = bytearray()
    self._sticky = bytearray()
    self.ack_pending = False
    self._save()
