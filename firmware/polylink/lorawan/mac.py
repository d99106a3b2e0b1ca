"""LoRaWAN 1.0.x MAC commands from the network: carried out on a lorawan.Device, answered.

Loaded by Device.downlink() only when a downlink carries MAC commands, and dropped again on
MicroPython (config.unload), like commands.py: most downlinks carry none.
"""

from micropython import const

from polylink.lorawan import le

# MAC command identifiers (LoRaWAN 1.0.x section 5)
_LINK_CHECK = const(0x02)
_LINK_ADR = const(0x03)
_DUTY_CYCLE = const(0x04)
_RX_PARAM_SETUP = const(0x05)
_DEV_STATUS = const(0x06)
_NEW_CHANNEL = const(0x07)
_RX_TIMING_SETUP = const(0x08)
_TX_PARAM_SETUP = const(0x09)
_DL_CHANNEL = const(0x0A)
_DEVICE_TIME = const(0x0D)

# Length of each network->device command's payload, for walking FOpts
_DOWN_LEN = {_LINK_CHECK: 2, _LINK_ADR: 4, _DUTY_CYCLE: 1, _RX_PARAM_SETUP: 4, _DEV_STATUS: 0,
             _NEW_CHANNEL: 5, _RX_TIMING_SETUP: 1, _TX_PARAM_SETUP: 1, _DL_CHANNEL: 4,
             _DEVICE_TIME: 5}


def apply(self, cmds):
    """Carry out the network's MAC commands on Device self; queue the answers."""
    i = 0
    n = len(cmds)
    while i < n:
        cid = cmds[i]
        ln = _DOWN_LEN.get(cid)
        if ln is None or i + 1 + ln > n:
            break  # an unknown command: the rest cannot be parsed (1.0.x section 5)
        a = cmds[i + 1 : i + 1 + ln]
        i += 1 + ln
        if cid == _LINK_CHECK:
            self.link_check = (a[0], a[1])
        elif cid == _LINK_ADR:
            _link_adr(self, a)
        elif cid == _DUTY_CYCLE:
            self.s["dc"] = a[0] & 0x0F
            self._mac.append(_DUTY_CYCLE)
        elif cid == _RX_PARAM_SETUP:
            _rx_param_setup(self, a)
        elif cid == _DEV_STATUS:
            bat = self.battery() if self.battery is not None else 255
            self._mac += bytes((_DEV_STATUS, bat, int(self.last_snr) & 0x3F))
        elif cid == _NEW_CHANNEL:
            _new_channel(self, a)
        elif cid == _RX_TIMING_SETUP:
            self.s["delay"] = (a[0] & 0x0F) or 1
            self._sticky.append(_RX_TIMING_SETUP)
        elif cid == _DL_CHANNEL:
            self._mac += bytes((_DL_CHANNEL, 0))  # separate RX1 frequencies: not supported
        # _TX_PARAM_SETUP is not used in EU868: skipped without an answer, as the spec says;
        # _DEVICE_TIME answers are read past (we never ask).

def _link_adr(self, a):
    r = self.region
    s = self.s
    dr = a[0] >> 4
    pw = a[0] & 0x0F
    mask = a[1] | (a[2] << 8)
    cntl = (a[3] >> 4) & 0x07
    nb = a[3] & 0x0F
    chans = len(s["ch"])
    status = 0
    if cntl == 6:
        mask = (1 << chans) - 1
    if cntl in (0, 6) and mask and not mask >> chans:
        status |= 1
    if dr == 0x0F or dr < len(r.DATA_RATES):
        status |= 2
    if pw == 0x0F or pw <= r.MAX_TX_POWER_INDEX:
        status |= 4
    if status == 7:  # all or nothing
        s["mask"] = mask
        if dr != 0x0F:
            s["dr"] = dr
        if pw != 0x0F:
            s["pw"] = pw
        s["nb"] = nb or 1
    self._mac += bytes((_LINK_ADR, status))

def _rx_param_setup(self, a):
    r = self.region
    offset = (a[0] >> 4) & 0x07
    dr = a[0] & 0x0F
    freq = le(a, 1, 3) * 100
    status = 0
    try:
        r.band_of(freq)
        status |= 1
    except ValueError:
        pass
    if dr < len(r.DATA_RATES):
        status |= 2
    if offset <= r.RX1_DR_OFFSET_MAX:
        status |= 4
    if status == 7:
        self.s["rx1o"], self.s["rx2dr"], self.s["rx2f"] = offset, dr, freq
    self._sticky += bytes((_RX_PARAM_SETUP, status))

def _new_channel(self, a):
    r = self.region
    s = self.s
    idx = a[0]
    freq = le(a, 1, 3) * 100
    status = 0
    if freq == 0 or _in_band(self, freq):
        status |= 1
    if (a[4] & 0x0F) <= (a[4] >> 4) < len(r.DATA_RATES):
        status |= 2
    if idx < len(r.DEFAULT_CHANNELS) or idx >= r.MAX_CHANNELS:
        status = 0  # the default channels cannot be changed
    if status == 3:
        ch = s["ch"]
        while len(ch) <= idx:
            ch.append(0)
        ch[idx] = freq
        if freq:
            s["mask"] |= 1 << idx
        else:
            s["mask"] &= ~(1 << idx)
    self._mac += bytes((_NEW_CHANNEL, status))

def _in_band(self, freq):
    try:
        self.region.band_of(freq)
        return True
    except ValueError:
        return False

