"""EU868 regional parameters (LoRaWAN Regional Parameters RP002-1.0.x), all in one module.

Another region (US915, AS923, ...) is another module with the same names; lorawan.py reads only
these. Frequencies in Hz, times in ms, airtime in microseconds.
"""

from micropython import const

NAME = "EU868"
# DR -> (spreading factor, bandwidth Hz); DR7 (FSK) is not offered by our LoRa-only radio code.
DATA_RATES = ((12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000), (7, 125000),
              (7, 250000))
# Maximum MACPayload (M) per DR without a repeater; the application payload N is M - 8 with no
# FOpts (RP002 table "EU863-870 maximum payload size").
MAX_MAC_PAYLOAD = (59, 59, 59, 123, 230, 230, 230)
MAX_DR = const(5)  # highest DR the device picks itself (DR6 only when the network asks)
DEFAULT_CHANNELS = (868100000, 868300000, 868500000)  # the three join channels, DR0..5
MAX_CHANNELS = const(16)
RX2_FREQ = const(869525000)
RX2_DR = const(0)
RECEIVE_DELAY1_MS = const(1000)
JOIN_ACCEPT_DELAY1_MS = const(5000)
# A confirmed uplink not acknowledged in RX1/RX2 may be sent again ACK_TIMEOUT after RX2:
# 2 s +- 1 s, random (RP002 / LoRaWAN 1.0.x "default settings")
ACK_TIMEOUT_MS = const(2000)
ACK_TIMEOUT_JITTER_MS = const(1000)
MAX_EIRP_DBM = const(16)
MAX_TX_POWER_INDEX = const(7)  # TXPower n: MaxEIRP - 2n dB
RX1_DR_OFFSET_MAX = const(5)
PREAMBLE = const(8)

# ETSI EN 300 220 sub-bands (low Hz, high Hz, duty cycle as 1/x): the limit applies per band.
BANDS = (
    (863000000, 868000000, 100),  # g: 1 %
    (868000000, 868600000, 100),  # g1: 1 %, the default channels
    (868700000, 869200000, 1000),  # g2: 0.1 %
    (869400000, 869650000, 10),  # g3: 10 %, RX2 lives here
    (869700000, 870000000, 100),  # g4: 1 %
)


def band_of(freq) -> int:
    """Index into BANDS of a frequency; ValueError when the frequency is outside EU868."""
    for i in range(len(BANDS)):
        lo, hi, _ = BANDS[i]
        if lo <= freq <= hi:
            return i
    raise ValueError("%d Hz is not in an EU868 sub-band" % freq)


def max_app_payload(dr, fopts_len=0) -> int:
    """Largest FRMPayload at a DR: M - 8 (FHDR 7 + FPort 1) minus any FOpts carried along."""
    return MAX_MAC_PAYLOAD[dr] - 8 - fopts_len


def rx1_dr(dr, offset) -> int:
    d = dr - offset
    return d if d > 0 else 0


def tx_power_dbm(index) -> int:
    return MAX_EIRP_DBM - 2 * index


def airtime_us(phy_len, dr, crc=True, preamble=PREAMBLE) -> int:
    """Time on air of a LoRa packet (Semtech AN1200.13 / SX1276 datasheet 4.1.1.7), in us.

    Explicit header, coding rate 4/5, low data rate optimisation on at SF11/12 with 125 kHz.
    Downlinks carry no payload CRC (crc=False).
    """
    sf, bw = DATA_RATES[dr]
    tsym = (1 << sf) * 1000000 // bw  # exact for 125 and 250 kHz
    de = 1 if (sf >= 11 and bw == 125000) else 0
    num = 8 * phy_len - 4 * sf + 28 + (16 if crc else 0)
    den = 4 * (sf - 2 * de)
    n = 0
    if num > 0:
        n = (num + den - 1) // den * 5  # ceil() * (CR + 4), CR = 1
    # preamble + 4.25 symbols, then 8 + n payload symbols; in quarter symbols to stay integral
    return ((preamble * 4 + 17) + 4 * (8 + n)) * tsym // 4


def lora_cfg(freq, dr, tx, power_dbm=MAX_EIRP_DBM) -> dict:
    """The micropython-lib `lora` driver's lora_cfg for one transmission or reception."""
    sf, bw = DATA_RATES[dr]
    return {
        "freq_khz": freq / 1000,
        "sf": sf,
        "bw": str(bw // 1000),
        "coding_rate": 5,
        "preamble_len": PREAMBLE,
        "output_power": power_dbm,
        "syncword": 0x34,  # LoRaWAN public network
        "crc_en": tx,  # uplinks carry a payload CRC, downlinks do not
        "invert_iq_tx": False,
        "invert_iq_rx": True,  # gateways transmit with inverted IQ so nodes do not hear nodes
        "implicit_header": False,
    }
