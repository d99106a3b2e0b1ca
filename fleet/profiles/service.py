"""Profiles as the UI, API and CLI change them: checked, stored, audited, tried out first."""

import base64
import binascii
import time

from polylink import quantities

from fleet.store import profiles as profile_store

from . import POLYLINK
from .decoding import Decoder, ProfileError, check
from .jscodec import CodecError

TRY_LIMIT = 100  # stored payloads a codec is tried on (the store keeps as many per node)


def save(db, body: dict, actor=None) -> dict:
    """Create or change a profile; a changed codec applies to frames from then on."""
    if body.get("name") == POLYLINK:
        raise ProfileError("the built-in profile 'polylink' cannot be changed")
    return profile_store.save_profile(db, check(body), actor=actor)


def payload_bytes(text: str) -> bytes:
    """A captured payload as a technician pastes it: hex (spaces allowed) or base64."""
    t = "".join((text or "").split())
    if not t:
        raise ProfileError("paste a payload: hex (e.g. 0367010F) or base64 (e.g. A2cBDw==)")
    if len(t) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in t):
        return bytes.fromhex(t)
    try:
        return base64.b64decode(t, validate=True)
    except (binascii.Error, ValueError):
        raise ProfileError(f"payload {t[:40]!r} is neither hex nor base64") from None


def _one(dec: Decoder, payload: bytes, fport: int, t: float) -> dict:
    try:
        readings, out = dec.decode(payload, fport, t)
    except CodecError as e:
        return {"error": str(e)}
    return {"data": out["data"], "warnings": out["warnings"],
            "readings": [{"quantity": qid, "name": quantities.QUANTITIES[qid][quantities.NAME],
                          "unit": quantities.QUANTITIES[qid][quantities.UNIT], "inst": inst,
                          "value": v} for qid, inst, v in readings]}


def try_codec(db, body: dict, payloads=(), node_id=None, fport=1) -> dict:
    """Decode pasted payloads, and the node's last stored ones, with a profile not yet saved."""
    p = check(dict(body, name=body.get("name") or "draft"))
    if p["codec"] in (POLYLINK, "passthrough", "senml"):
        raise ProfileError(f"codec {p['codec']} cannot be tried on raw payloads")
    dec = Decoder(p)
    now = time.time()
    out = {"pasted": [], "stored": []}
    for text in payloads:
        out["pasted"].append(dict(_one(dec, payload_bytes(text), fport, now), payload=text))
    if node_id:
        for r in profile_store.raw_payloads(db, node_id, TRY_LIMIT):
            res = _one(dec, bytes(r["payload"]), r["fport"] or fport, r["received_at"])
            out["stored"].append(dict(res, id=r["id"], received_at=r["received_at"],
                                      fport=r["fport"], payload=bytes(r["payload"]).hex()))
    out["bad"] = sum(1 for r in out["pasted"] + out["stored"] if "error" in r)
    return out
