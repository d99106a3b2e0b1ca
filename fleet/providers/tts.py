"""The Things Stack v3 MQTT integration (The Things Network is The Things Stack too).

Uplinks: `v3/{application id}@{tenant}/devices/{device id}/up`, JSON as in The Things Stack's
"Data Formats" documentation. Empty fields are left out (f_cnt 0, rssi 0, snr 0, confirmed false
arrive absent); frequency and consumed_airtime are strings. Downlinks: a JSON
`{"downlinks": [...]}` to `.../down/push` (appended to the device's queue) or `.../down/replace`.
"""

import base64
import json

from .adapter import Reader, Uplink, dr_of

KIND = "tts"
TITLE = "The Things Stack v3"


_read = Reader("TTS uplink")


def app_prefix(cfg) -> str:
    """`{application}@{tenant}`: The Things Network's tenant is `ttn`."""
    return f"{cfg['application']}@{cfg.get('tenant') or 'ttn'}"


def subscriptions(cfg) -> list[tuple[str, int]]:
    return [(f"v3/{app_prefix(cfg)}/devices/+/up", 1)]


def downlink_topic(cfg, device_id: str) -> str:
    return f"v3/{app_prefix(cfg)}/devices/{device_id}/down/push"


def downlink_message(frame: bytes, fport: int, confirmed=False, dev_eui="") -> bytes:
    d = {"f_port": fport, "frm_payload": base64.b64encode(frame).decode(), "priority": "NORMAL"}
    if confirmed:
        d["confirmed"] = True
    return json.dumps({"downlinks": [d]}).encode()


def uplink_key(msg: dict, up: dict, dev_eui: str, fcnt: int) -> str | None:
    """The message's identity: its Application Server correlation id (`as:up:<ULID>`, one per
    uplink the AS handles), else the Network Server's received_at; with the DevEUI and FCnt."""
    ids = msg.get("correlation_ids", up.get("correlation_ids")) or []
    if not isinstance(ids, list):
        raise _read.error(f"correlation_ids must be a list, got {ids!r}")
    found = next((i for i in ids if isinstance(i, str) and i.startswith("as:up:")), None)
    if found is None:
        found = _read.text(up.get("received_at"), "uplink_message.received_at")
    return None if found is None else f"{dev_eui}/{fcnt}/{found}"


def parse_uplink(topic: str, payload: bytes):
    """An Uplink, or None for a message that carries no application uplink (join, ...)."""
    msg = _read.message(payload)
    up = msg.get("uplink_message")
    if up is None:
        return None
    ids = msg.get("end_device_ids")
    if not isinstance(ids, dict) or not isinstance(up, dict):
        raise _read.error("end_device_ids and uplink_message must be objects")
    dev_eui = _read.dev_eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    frame = _read.base64(up.get("frm_payload", ""), "uplink_message.frm_payload")
    settings = up.get("settings") or {}
    lora = (settings.get("data_rate") or {}).get("lora") or {}
    sf = _read.number(lora, "spreading_factor", int)
    bw = _read.number(lora, "bandwidth", int)
    airtime = up.get("consumed_airtime")
    if isinstance(airtime, str) and airtime.endswith("s"):
        airtime = airtime[:-1]
    rx = []
    for m in up.get("rx_metadata") or []:
        gw = (m.get("gateway_ids") or {}).get("gateway_id", "")
        rx.append(_read.reception(gw, m))
    fcnt = _read.number(up, "f_cnt", int) or 0
    return Uplink(
        ext_id=dev_eui.upper(),
        device_id=ids.get("device_id") or topic.split("/")[3],
        fport=_read.number(up, "f_port", int) or 0,
        fcnt=fcnt,
        payload=frame,
        confirmed=bool(up.get("confirmed", False)),
        sf=sf,
        bw=bw,
        dr=dr_of(sf, bw),
        freq=_read.number(settings, "frequency", int),
        airtime=_read.number({"a": airtime}, "a"),
        receptions=rx,
        decoded=up.get("decoded_payload") if isinstance(up.get("decoded_payload"), dict)
        else None,
        uplink_key=uplink_key(msg, up, dev_eui.upper(), fcnt),
    )
