"""ChirpStack v4 MQTT integration (also how Helium traffic arrives through a ChirpStack).

Uplinks: `application/{application id}/device/{dev_eui}/event/up`, the protobuf JSON mapping of
`integration.UplinkEvent` (camelCase; fields with their default value — fCnt 0, confirmed false,
snr 0 — are left out). Downlinks: `application/{application id}/device/{dev_eui}/command/down`
with `{"devEui", "confirmed", "fPort", "data"}`; ChirpStack appends it to the device queue.
"""

import base64
import json

from polylink.lorawan import region as region_eu868

from .adapter import Reader, Uplink, dr_of

KIND = "chirpstack"
TITLE = "ChirpStack v4"


_read = Reader("ChirpStack uplink")


def subscriptions(cfg) -> list[tuple[str, int]]:
    return [(f"application/{cfg['application']}/device/+/event/up", 1)]


def downlink_topic(cfg, device_id: str) -> str:
    return f"application/{cfg['application']}/device/{device_id.lower()}/command/down"


def downlink_message(frame: bytes, fport: int, confirmed=False, dev_eui="") -> bytes:
    return json.dumps({"devEui": dev_eui.lower(), "confirmed": confirmed, "fPort": fport,
                       "data": base64.b64encode(frame).decode()}).encode()


def parse_uplink(topic: str, payload: bytes):
    msg = _read.message(payload)
    info = msg.get("deviceInfo")
    if not isinstance(info, dict):
        raise _read.error("deviceInfo must be an object")
    dev_eui = _read.dev_eui(info.get("devEui"), "deviceInfo.devEui")
    frame = _read.base64(msg.get("data", ""), "data")
    tx = msg.get("txInfo") or {}
    lora = (tx.get("modulation") or {}).get("lora") or {}
    sf = _read.number(lora, "spreadingFactor", int)
    bw = _read.number(lora, "bandwidth", int)
    rx = [_read.reception(m.get("gatewayId", ""), m) for m in msg.get("rxInfo") or []]
    fcnt = _read.number(msg, "fCnt", int) or 0
    # One UUID per uplink, after ChirpStack merged what its gateways heard; with DevEUI and FCnt.
    dedup = _read.text(msg.get("deduplicationId"), "deduplicationId")
    dr = _read.number(msg, "dr", int)
    if dr is None:
        dr = dr_of(sf, bw) if sf else 0  # DR0 is left out like any zero
    airtime = None
    if sf and bw and dr is not None:
        if dr < len(region_eu868.DATA_RATES):
            airtime = region_eu868.airtime_us(len(frame) + 13, dr) / 1e6
    return Uplink(
        ext_id=dev_eui.upper(),
        device_id=dev_eui.lower(),
        fport=_read.number(msg, "fPort", int) or 0,
        fcnt=fcnt,
        payload=frame,
        confirmed=bool(msg.get("confirmed", False)),
        sf=sf,
        bw=bw,
        dr=dr,
        freq=_read.number(tx, "frequency", int),
        airtime=airtime,
        receptions=rx,
        decoded=msg.get("object") if isinstance(msg.get("object"), dict) else None,
        uplink_key=None if dedup is None else f"{dev_eui.upper()}/{fcnt}/{dedup}",
    )
