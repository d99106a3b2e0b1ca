"""RX2 per network: the emulator's TTS mode behaves like The Things Network EU868 (join-accept
DLSettings with RX2 DR3, RX2 downlinks at SF9 on 869.525 MHz), its ChirpStack mode keeps the
regional default DR0; the real firmware link (polylink.lorawan.link) honours what the join-accept
said.

The radio, gateway and network server are simulations (firmware/host); the LoRaWAN code, the
crypto and the MQTT broker are the real ones.
"""

import asyncio

import pytest
from polylink.lorawan import region
from polylink.lorawan.link import LoRaLink
from polylink_host import simclock
from polylink_host.nsemu import NetworkServer
from polylink_host.simradio import Gateway, Medium, SimModem

OTAA = {"dev_eui": "02A1B2C3D4E5F601", "join_eui": "0000000000000000",
        "app_key": "00112233445566778899AABBCCDDEEFF", "adr": False}


class _HAL:
    def __init__(self, root):
        self.root = str(root)

    def path(self, name):
        return self.root + "/" + name

    def ticks_ms(self):
        return simclock.ticks_ms()

    def ticks_diff(self, a, b):
        return simclock.ticks_diff(a, b)

    def ticks_add(self, a, d):
        return simclock.ticks_add(a, d)

    def time(self):
        import time

        return int(time.time())


class _Cfg:
    lorawan = OTAA


@pytest.mark.parametrize("flavor, rx2_dr", [("tts", 3), ("chirpstack", 0)])
def test_rx2_data_rate_follows_the_network_and_the_firmware_honours_it(
        tmp_path, mosquitto_session, flavor, rx2_dr):
    broker = mosquitto_session
    out = {}

    async def scenario():
        medium = Medium()
        gw = Gateway(medium, "gw-1", (0, 0))
        ns = NetworkServer(flavor, broker.host, broker.port, "app", gateways=[gw])
        ns.register_otaa(OTAA["dev_eui"], OTAA["app_key"])
        link = LoRaLink(_HAL(tmp_path), _Cfg(), SimModem(medium, (300, 0)), lambda t, m: None)
        link.dev.rand = lambda n: 0
        try:
            # RX1 taken: the join-accept comes in RX2 at the regional default DR0, whatever
            # RX2 an earlier session used (a TTN session leaves DR3 behind)
            ns.force_rx2 = True
            link.dev.s["rx2dr"] = 3
            await asyncio.wait_for(link.join(), 60)
            out["join"] = ns.sent[-1]
            out["session"] = (link.dev.s["rx1o"], link.dev.s["rx2dr"], link.dev.rx2())
            # a confirmed uplink's ACK in RX2 at the network's RX2 DR reaches the node at once
            out["acked"] = await asyncio.wait_for(link.send(b"\x22\x00\x01", confirmed=True), 60)
            out["ack"] = ns.sent[-1]
            out["tries"] = (link.acked, link.retransmissions)
            # RX1 free again: the answer goes in RX1 at the uplink's DR (RX1DROffset 0)
            ns.force_rx2 = False
            await asyncio.wait_for(link.send(b"\x22\x00\x02", confirmed=True), 60)
            out["rx1"] = ns.sent[-1]
            if rx2_dr != region.RX2_DR:
                # a device that ignored DLSettings would listen at DR0 and miss the ACK
                ns.force_rx2 = True
                link.dev.s["rx2dr"] = region.RX2_DR
                link.tries = 1
                out["ignored"] = await asyncio.wait_for(
                    link.send(b"\x22\x00\x03", confirmed=True), 60)
        finally:
            ns.close()

    asyncio.run(scenario())
    assert out["join"] == {"window": 2, "freq": region.RX2_FREQ, "dr": region.RX2_DR,
                           "join": True}
    assert out["session"] == (0, rx2_dr, (2000, region.RX2_FREQ, rx2_dr))
    assert out["acked"] is True and out["tries"] == (1, 0)
    assert out["ack"] == {"window": 2, "freq": region.RX2_FREQ, "dr": rx2_dr, "join": False}
    assert out["rx1"]["window"] == 1 and out["rx1"]["dr"] == 5
    assert out["rx1"]["freq"] in region.DEFAULT_CHANNELS
    if rx2_dr != region.RX2_DR:
        assert out["ignored"] is False


def test_join_accept_dlsettings_per_network(mosquitto_session):
    """The join-accept's DLSettings byte as each network sends it: TTN RX2 DR3, ChirpStack DR0."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from polylink.lorawan.device import Device

    got = {}

    async def scenario(flavor, root):
        medium = Medium()
        gw = Gateway(medium, "gw-1", (0, 0))
        ns = NetworkServer(flavor, mosquitto_session.host, mosquitto_session.port, "app",
                           gateways=[gw])
        ns.register_otaa(OTAA["dev_eui"], OTAA["app_key"])
        modem = SimModem(medium, (100, 0))
        dev = Device(root + "/lw", OTAA, region)
        try:
            modem.configure(region.lora_cfg(868100000, 5, True))
            await modem.send(dev.join_request())
            modem.configure(region.lora_cfg(868100000, 5, False))
            await asyncio.sleep(region.JOIN_ACCEPT_DELAY1_MS / 1000 - 0.1)
            phy = await modem.recv(timeout_ms=400)
        finally:
            ns.close()
        # the network encrypted with AES decrypt; encrypt gives the clear join-accept back
        enc = Cipher(algorithms.AES(bytes.fromhex(OTAA["app_key"])), modes.ECB()).encryptor()
        clear = enc.update(bytes(phy[1:])) + enc.finalize()
        got[flavor] = clear[10]  # AppNonce 3, NetID 3, DevAddr 4, then DLSettings

    import tempfile

    for flavor in ("tts", "chirpstack"):
        with tempfile.TemporaryDirectory() as root:
            asyncio.run(scenario(flavor, root))
    assert got == {"tts": 0x03, "chirpstack": 0x00}


def test_gateway_sends_one_downlink_at_a_time():
    async def scenario():
        gw = Gateway(Medium(), "gw-1")
        at = asyncio.get_running_loop().time() + 5
        assert gw.free_at(at, 20, 5)
        gw.schedule(b"x" * 20, at, 868100000, 5)
        air = region.airtime_us(20, 5, crc=False) / 1e6
        return (gw.free_at(at + air / 2, 20, 5), gw.free_at(at - air / 2, 20, 5),
                gw.free_at(at + air, 20, 5), gw.free_at(at - 1.0, 12, 0))

    # overlapping the scheduled one (either side) is refused; right after it, or ending
    # before it, is fine
    assert asyncio.run(scenario()) == (False, False, True, True)
