"""ChirpStack v4 MQTT integration (also how Helium traffic arrives through a ChirpStack).

Uplinks: `application/{application id}/device/{dev_eui}/event/up`, the protobuf JSON mapping of
`integration.UplinkEvent` (camelCase; fields with their default value — fCnt 0, confirmed false,
snr 0 — are left out). Downlinks: `application/{application id}/device/{dev_eui}/command/down`
with `{"devEui", "confirmed", "fPort", "data"}`; ChirpStack appends it to the device queue.
"""

import base64
import binascii
import json

KIND = "chirpstack"
TITLE = "ChirpStack v4"


def _err(msg):
    from . import ProviderError

    return ProviderError(f"ChirpStack uplink: {msg}")


def subscriptions(cfg) -> list[tuple[str, int]]:
    return [(f"application/{cfg['application']}/device/+/event/up", 1)]


def downlink_topic(cfg, device_id: str) -> str:
    return f"application/{cfg['application']}/device/{device_id.lower()}/command/down"


def downlink_message(frame: bytes, fport: int, confirmed=False, dev_eui="") -> bytes:
    return json.dumps({"devEui": dev_eui.lower(), "confirmed": confirmed, "fPort": fport,
                       "data": base64.b64encode(frame).decode()}).encode()


def _num(d, key, kind=float):
    v = d.get(key)
    if v is None:
        return None
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise _err(f"{key} is not a number: {v!r}") from None


def parse_uplink(topic: str, payload: bytes):
    from . import Reception, Uplink, dr_of

    try:
        msg = json.loads(payload)
    except ValueError as e:
        raise _err(f"not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise _err("not a JSON object")
    info = msg.get("deviceInfo")
    if not isinstance(info, dict):
        raise _err("deviceInfo must be an object")
    dev_eui = info.get("devEui")
    if not isinstance(dev_eui, str) or len(dev_eui) != 16:
        raise _err(f"deviceInfo.devEui must be 16 hex digits, got {dev_eui!r}")
    try:
        frame = base64.b64decode(msg.get("data", ""), validate=True)
    except (binascii.Error, TypeError):
        raise _err("data is not base64") from None
    tx = msg.get("txInfo") or {}
    lora = (tx.get("modulation") or {}).get("lora") or {}
    sf = _num(lora, "spreadingFactor", int)
    bw = _num(lora, "bandwidth", int)
    rx = [Reception(m.get("gatewayId", ""), _num(m, "rssi") or 0.0, _num(m, "snr") or 0.0)
          for m in msg.get("rxInfo") or []]
    dr = _num(msg, "dr", int)
    if dr is None:
        dr = dr_of(sf, bw) if sf else 0  # DR0 is left out like any zero
    airtime = None
    if sf and bw and dr is not None:
        from polylink.lorawan import region as region_eu868

        if dr < len(region_eu868.DATA_RATES):
            airtime = region_eu868.airtime_us(len(frame) + 13, dr) / 1e6
    return Uplink(
        ext_id=dev_eui.upper(),
        device_id=dev_eui.lower(),
        fport=_num(msg, "fPort", int) or 0,
        fcnt=_num(msg, "fCnt", int) or 0,
        payload=frame,
        confirmed=bool(msg.get("confirmed", False)),
        sf=sf,
        bw=bw,
        dr=dr,
        freq=_num(tx, "frequency", int),
        airtime=airtime,
        receptions=rx,
    )
