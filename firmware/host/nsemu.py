"""A LoRaWAN network-server emulator that speaks The Things Stack's or ChirpStack's MQTT.

SIMULATION and test infrastructure: no network server runs here. It does what the fleet depends
on and nothing more — OTAA joins (MIC, DevNonce never reused, session keys, join-accept in the
JOIN_ACCEPT_DELAY1 window), ABP sessions, data uplinks (deduplicated across gateways, MIC with the
full 32-bit counter, decryption), LinkCheckReq answers, ACKs of confirmed uplinks, and a
per-device downlink queue sent after the next uplink (Class A) in RX1, or in RX2 when RX1 is not
possible (the gateway is already transmitting then). RX2 follows the network: The Things
Network's EU868 plan uses 869.525 MHz at SF9 (DR3) and tells the device so in the join-accept's
DLSettings; ChirpStack's default EU868 region config keeps the regional default DR0 (SF12). A
join-accept goes out in RX1, or in RX2 at the regional default (the device learns DLSettings
only from it). A confirmed uplink is
ACKed in the downlink that follows it (ACK bit in FCtrl, with queued data if any); a
retransmission (same FCnt) is ACKed again but handed to the application only once. It then
publishes on a real MQTT broker exactly the JSON that The Things Stack v3
(`v3/{app}@{tenant}/devices/{id}/up`) or ChirpStack v4
(`application/{app}/device/{dev_eui}/event/up`) publish in their MQTT integrations (with
`confirmed: true` on a confirmed uplink), leaving out zero/false/empty fields as they do, and
takes their downlink messages (`.../down/push`, `.../command/down`).
"""

import asyncio
import base64
import datetime
import json
import threading
import uuid

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from paho.mqtt.enums import CallbackAPIVersion
from polylink.lorawan import crypto, region

DEDUP_S = 0.2
NET_ID = bytes.fromhex("000013")  # TTN's NetID (LoRaWAN Alliance, type 0, NwkID 0x13)
# RX2 data rate each network puts in the join-accept's DLSettings (RX1DROffset is 0 in both):
# TTN's EU868 frequency plan uses SF9 (DR3); ChirpStack's region_eu868.toml rx2_dr = 0.
RX2_DR = {"tts": 3, "chirpstack": region.RX2_DR}
RX1_DR_OFFSET = 0


def _rev(b: bytes) -> bytes:
    return bytes(reversed(b))


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(
        timespec="microseconds").replace("+00:00", "Z")


def _drop_empty(d):
    """Protobuf JSON as both providers emit it: no zero, false, empty string, list or object."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            v = _drop_empty(v)
            if v is None or v is False or v in ("", [], {}):
                continue
            if isinstance(v, int | float) and not isinstance(v, bool) and v == 0:
                continue
            out[k] = v
        return out
    if isinstance(d, list):
        return [_drop_empty(x) for x in d]
    return d


class Session:
    def __init__(self, dev_eui, dev_addr, nwk, app, rx2_dr=region.RX2_DR, rx1_offset=0):
        self.dev_eui, self.dev_addr, self.nwk, self.app = dev_eui, dev_addr, nwk, app
        self.rx2_dr, self.rx1_offset = rx2_dr, rx1_offset  # as the device was told
        self.fcnt_up = -1
        self.fcnt_down = 0
        self.queue: list[tuple[int, bytes, bool]] = []  # (fport, payload, confirmed)
        self.ack_next = False
        self.mac_out = bytearray()


class NetworkServer:
    """One emulated network (flavor 'tts' or 'chirpstack') with its gateways and MQTT link."""

    def __init__(self, flavor: str, host: str, port: int, application: str, tenant="ttn",
                 gateways=(), username=None, password=None):
        if flavor not in ("tts", "chirpstack"):
            raise ValueError(f"flavor must be tts or chirpstack, got {flavor!r}")
        self.flavor, self.app, self.tenant = flavor, application, tenant
        self.devices: dict[str, dict] = {}  # DevEUI -> {app_key, device_id, join_eui}
        self.sessions: dict[bytes, Session] = {}  # DevAddr (air order) -> session
        self.nonces: dict[str, set] = {}
        self.pending: dict[bytes, tuple] = {}  # PHY -> (first meta, [(gateway, meta)])
        self.published: list[tuple[str, dict]] = []
        self.stats = {"joins": 0, "uplinks": 0, "mic_fail": 0, "downlinks": 0, "dup_gw": 0,
                      "retransmissions": 0, "acks": 0, "rx2": 0}
        self.rx2_dr = RX2_DR[flavor]
        self.force_rx2 = False  # tests: answer in RX2, as when RX1 is not possible
        self.sent: list[dict] = []  # every downlink scheduled: window, freq, dr, join
        self._lock = threading.Lock()
        self._next_addr = 0x260B0000 if flavor == "tts" else 0x00180000
        for g in gateways:
            g.on_uplink = self.on_uplink
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2,
                                client_id=f"nsemu-{flavor}-{uuid.uuid4().hex[:6]}")
        if username:
            self.mqtt.username_pw_set(username, password)
        self.mqtt.on_connect = lambda c, u, f, rc, p: c.subscribe(self._down_topic_filter(), 1)
        self.mqtt.on_message = self._on_mqtt
        self.mqtt.connect(host, port)
        self.mqtt.loop_start()

    def close(self):
        self.mqtt.loop_stop()
        self.mqtt.disconnect()

    # registry
    def register_otaa(self, dev_eui: str, app_key: str, device_id=None, join_eui="0" * 16):
        self.devices[dev_eui.upper()] = {"app_key": bytes.fromhex(app_key),
                                         "device_id": device_id or dev_eui.lower(),
                                         "join_eui": join_eui.upper()}

    def register_abp(self, dev_eui, dev_addr, nwk_s_key, app_s_key, device_id=None,
                     rx2_dr=region.RX2_DR):
        """An ABP session; rx2_dr is what the device was configured with (no join tells it)."""
        self.devices[dev_eui.upper()] = {"device_id": device_id or dev_eui.lower(),
                                         "join_eui": "0" * 16}
        addr = _rev(bytes.fromhex(dev_addr))
        self.sessions[addr] = Session(dev_eui.upper(), addr, bytes.fromhex(nwk_s_key),
                                      bytes.fromhex(app_s_key), rx2_dr)

    # topics
    def _prefix(self):
        return f"v3/{self.app}@{self.tenant}" if self.flavor == "tts" else f"application/{self.app}"

    def _down_topic_filter(self):
        if self.flavor == "tts":
            return f"{self._prefix()}/devices/+/down/push"
        return f"{self._prefix()}/device/+/command/down"

    def _device_by_topic_id(self, dev_id):
        for eui, d in self.devices.items():
            if d["device_id"] == dev_id or eui == dev_id.upper():
                return eui
        return None

    def _on_mqtt(self, c, userdata, msg):
        """A downlink from the application: TTS `down/push` or ChirpStack `command/down`."""
        parts = msg.topic.split("/")
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        eui = self._device_by_topic_id(parts[3] if self.flavor == "tts" else parts[3])
        if eui is None:
            return
        items = []
        if self.flavor == "tts":
            for d in body.get("downlinks", []):
                items.append((d.get("f_port", 0), base64.b64decode(d.get("frm_payload", "")),
                              bool(d.get("confirmed"))))
        else:
            items.append((body.get("fPort", 0), base64.b64decode(body.get("data", "")),
                          bool(body.get("confirmed"))))
        with self._lock:
            for s in self.sessions.values():
                if s.dev_eui == eui:
                    s.queue.extend(items)

    # radio side
    def on_uplink(self, gateway, data: bytes, meta: dict) -> None:
        """Called by every gateway that heard a packet; the first one starts a dedup window."""
        key = bytes(data)
        if key in self.pending:
            self.pending[key][1].append((gateway, meta))
            self.stats["dup_gw"] += 1
            return
        self.pending[key] = (meta, [(gateway, meta)])
        asyncio.get_running_loop().call_later(DEDUP_S, self._process, key)

    def _process(self, key: bytes) -> None:
        meta, rx = self.pending.pop(key)
        mtype = key[0] & 0xE0
        if mtype == 0x00 and len(key) == 23:
            self._join(key, meta, rx)
        elif mtype in (0x40, 0x80):
            self._data(key, meta, rx)

    def _best(self, rx):
        return max(rx, key=lambda gm: gm[1]["rssi"])[0]

    def _join(self, phy, meta, rx):
        dev_eui = _rev(phy[9:17]).hex().upper()
        dev = self.devices.get(dev_eui)
        if dev is None or "app_key" not in dev:
            return
        if crypto.join_mic(dev["app_key"], phy[:19]) != phy[19:23]:
            self.stats["mic_fail"] += 1
            return
        nonce = phy[17:19]
        seen = self.nonces.setdefault(dev_eui, set())
        if nonce in seen:
            return  # a replayed join-request
        seen.add(nonce)
        self._next_addr += 1
        addr = self._next_addr.to_bytes(4, "little")
        app_nonce = uuid.uuid4().bytes[:3]
        dl = (RX1_DR_OFFSET << 4) | self.rx2_dr  # DLSettings
        clear = bytes((0x20,)) + app_nonce + NET_ID[::-1] + addr + bytes((dl, 1))
        mic = crypto.join_mic(dev["app_key"], clear)
        body = clear[1:] + mic
        # The network encrypts a join-accept with AES *decrypt* so the device only encrypts.
        dec = Cipher(algorithms.AES(dev["app_key"]), modes.ECB()).decryptor()
        phy_out = bytes((0x20,)) + dec.update(body) + dec.finalize()
        nwk, app = crypto.session_keys(dev["app_key"], app_nonce, NET_ID[::-1], nonce)
        for a, s in list(self.sessions.items()):
            if s.dev_eui == dev_eui:
                del self.sessions[a]
        self.sessions[addr] = Session(dev_eui, addr, nwk, app, self.rx2_dr, RX1_DR_OFFSET)
        self.stats["joins"] += 1
        # Before the join-accept the device knows only the regional defaults: RX1DROffset 0
        # and RX2 at DR0.
        self._send(phy_out, meta, rx, region.JOIN_ACCEPT_DELAY1_MS, meta["dr"], region.RX2_DR,
                   join=True)
        self._publish_join(dev_eui, addr, meta)

    def _data(self, phy, meta, rx):
        addr = bytes(phy[1:5])
        s = self.sessions.get(addr)
        if s is None:
            return
        f16 = phy[6] | phy[7] << 8
        base = max(s.fcnt_up, 0)
        fcnt = (base & ~0xFFFF) | f16
        if fcnt < base:
            fcnt += 0x10000
        if crypto.data_mic(s.nwk, 0, addr, fcnt, phy[:-4]) != phy[-4:]:
            self.stats["mic_fail"] += 1
            return
        confirmed = (phy[0] & 0xE0) == 0x80
        if fcnt == s.fcnt_up:
            # The same FCnt again: a confirmed uplink whose ACK the device missed, or an NbTrans
            # repetition. Both networks hand it to the application once (TTS "Confirmed uplinks
            # behavior"; ChirpStack logs UPLINK_F_CNT_RETRANSMISSION) and ACK every confirmed
            # transmission they receive.
            self.stats["retransmissions"] += 1
            if confirmed:
                s.ack_next = True
                self._maybe_downlink(s, meta, rx)
            return
        if fcnt < s.fcnt_up:
            return  # a replay
        s.fcnt_up = fcnt
        folen = phy[5] & 0x0F
        fopts = phy[8:8 + folen]
        p = 8 + folen
        buf = bytearray(phy[:-4])
        fport, payload = None, b""
        if p < len(buf):
            fport = buf[p]
            key = s.nwk if fport == 0 else s.app
            crypto.crypt_payload(key, 0, addr, fcnt, buf, p + 1, len(buf))
            payload = bytes(buf[p + 1:])
        if 0x02 in bytes(fopts):  # LinkCheckReq: margin over DR sensitivity, gateway count
            margin = max(0, int(meta["snr"] + 20))
            s.mac_out += bytes((0x02, min(margin, 254), len(rx)))
        if confirmed:
            s.ack_next = True
        self.stats["uplinks"] += 1
        if fport:
            self._publish_up(s, fcnt, fport, payload, confirmed, meta, rx)
        self._maybe_downlink(s, meta, rx)

    def _maybe_downlink(self, s: Session, meta, rx):
        with self._lock:
            item = s.queue.pop(0) if s.queue else None
        if item is None and not s.ack_next and not s.mac_out:
            return
        fopts = bytes(s.mac_out[:15])
        s.mac_out = bytearray()
        mtype = 0xA0 if item and item[2] else 0x60
        fctrl = len(fopts) | (0x20 if s.ack_next else 0)
        self.stats["acks"] += s.ack_next
        s.ack_next = False
        with self._lock:
            if s.queue:
                fctrl |= 0x10  # FPending: more is waiting
        fcnt = s.fcnt_down
        s.fcnt_down += 1
        msg = bytearray((mtype,)) + s.dev_addr + bytes((fctrl, fcnt & 0xFF, fcnt >> 8 & 0xFF))
        msg += fopts
        if item is not None:
            fport, payload, _ = item
            p = len(msg)
            msg += bytes((fport,)) + payload
            crypto.crypt_payload(s.app if fport else s.nwk, 1, s.dev_addr, fcnt, msg,
                                    p + 1, len(msg))
        phy = bytes(msg) + crypto.data_mic(s.nwk, 1, s.dev_addr, fcnt, bytes(msg))
        self._send(phy, meta, rx, region.RECEIVE_DELAY1_MS,
                   region.rx1_dr(meta["dr"], s.rx1_offset), s.rx2_dr)
        self.stats["downlinks"] += 1

    def _send(self, phy, meta, rx, delay1_ms, rx1_dr, rx2_dr, join=False):
        """Schedule a downlink in RX1 (uplink channel) or, if RX1 is not possible, in RX2."""
        gw = self._best(rx)
        at = meta["end"] + delay1_ms / 1000
        window, freq, dr = 1, meta["freq"], rx1_dr
        if self.force_rx2 or not gw.free_at(at, len(phy), rx1_dr):
            window, freq, dr, at = 2, region.RX2_FREQ, rx2_dr, at + 1.0
            self.stats["rx2"] += 1
        gw.schedule(phy, at, freq, dr)
        self.sent.append({"window": window, "freq": freq, "dr": dr, "join": join})

    # MQTT side: the providers' JSON
    def _publish(self, topic: str, msg: dict) -> None:
        self.published.append((topic, msg))
        self.mqtt.publish(topic, json.dumps(msg), qos=1)

    def _publish_join(self, dev_eui, addr, meta):
        if self.flavor != "tts":
            return  # ChirpStack publishes its join event only after the first uplink; not needed
        dev = self.devices[dev_eui]
        self._publish(f"{self._prefix()}/devices/{dev['device_id']}/join", _drop_empty({
            "end_device_ids": self._ids(dev_eui, addr),
            "correlation_ids": [f"as:up:{uuid.uuid4().hex[:26].upper()}"],
            "received_at": _iso(meta["time"]),
            "join_accept": {"session_key_id": base64.b64encode(uuid.uuid4().bytes).decode(),
                            "received_at": _iso(meta["time"])}}))

    def _ids(self, dev_eui, addr):
        dev = self.devices[dev_eui]
        return {"device_id": dev["device_id"], "application_ids": {"application_id": self.app},
                "dev_eui": dev_eui, "join_eui": dev["join_eui"],
                "dev_addr": _rev(addr).hex().upper()}

    def _publish_up(self, s, fcnt, fport, payload, confirmed, meta, rx):
        sf, bw = meta["sf"], meta["bw"]
        airtime = region.airtime_us(len(payload) + 13, meta["dr"]) / 1e6
        if self.flavor == "tts":
            dev = self.devices[s.dev_eui]
            msg = {
                "end_device_ids": self._ids(s.dev_eui, s.dev_addr),
                "correlation_ids": [f"as:up:{uuid.uuid4().hex[:26].upper()}"],
                "received_at": _iso(meta["time"]),
                "uplink_message": {
                    "session_key_id": base64.b64encode(uuid.uuid4().bytes).decode(),
                    "f_port": fport, "f_cnt": fcnt,
                    "frm_payload": base64.b64encode(payload).decode(),
                    "rx_metadata": [{
                        "gateway_ids": {"gateway_id": g.id, "eui": g.eui},
                        "time": _iso(m["time"]), "timestamp": int(m["end"] * 1e6) & 0xFFFFFFFF,
                        "rssi": m["rssi"], "channel_rssi": m["rssi"], "snr": m["snr"],
                    } for g, m in rx],
                    "settings": {"data_rate": {"lora": {"bandwidth": bw, "spreading_factor": sf,
                                                        "coding_rate": "4/5"}},
                                 "frequency": str(meta["freq"]),
                                 "timestamp": int(meta["end"] * 1e6) & 0xFFFFFFFF},
                    "received_at": _iso(meta["time"]),
                    "confirmed": confirmed,
                    "consumed_airtime": f"{airtime:.6f}s",
                    "network_ids": {"net_id": NET_ID.hex().upper(), "tenant_id": self.tenant,
                                    "cluster_id": "eu1"},
                },
            }
            self._publish(f"{self._prefix()}/devices/{dev['device_id']}/up", _drop_empty(msg))
        else:
            dev = self.devices[s.dev_eui]
            msg = {
                "deduplicationId": str(uuid.uuid4()),
                "time": _iso(meta["time"]),
                "deviceInfo": {"tenantId": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.tenant)),
                               "tenantName": self.tenant, "applicationId": self.app,
                               "applicationName": "polylink", "deviceProfileId": str(
                                   uuid.uuid5(uuid.NAMESPACE_DNS, "polylink-eu868")),
                               "deviceProfileName": "Polylink EU868",
                               "deviceName": dev["device_id"], "devEui": s.dev_eui.lower(),
                               "deviceClassEnabled": "CLASS_A", "tags": {}},
                "devAddr": _rev(s.dev_addr).hex(),
                "adr": True, "dr": meta["dr"], "fCnt": fcnt, "fPort": fport,
                "confirmed": confirmed, "data": base64.b64encode(payload).decode(),
                "rxInfo": [{"gatewayId": g.eui.lower(), "uplinkId": uuid.uuid4().int & 0xFFFFFFFF,
                            "rssi": int(m["rssi"]), "snr": m["snr"], "channel": 0,
                            "context": base64.b64encode(b"ctx").decode(),
                            "crcStatus": "CRC_OK"} for g, m in rx],
                "txInfo": {"frequency": meta["freq"], "modulation": {"lora": {
                    "bandwidth": bw, "spreadingFactor": sf, "codeRate": "CR_4_5"}}},
            }
            self._publish(f"{self._prefix()}/device/{s.dev_eui.lower()}/event/up",
                          _drop_empty(msg))
