"""Registering other suppliers' devices: one by one from a scanned QR code (LoRa Alliance TR005
or a bare DevEUI), or in bulk from a CSV of DevEUI, name, profile and position."""

import csv
import io
import re

from fleet.store import profiles as profile_store
from fleet.store.base import StoreError, valid_node_id

HEX16 = re.compile(r"[0-9A-F]{16}\Z")
MAX_CSV_ROWS = 5000


class DeviceError(ValueError):
    """A device (or a QR code, or a CSV row) cannot be registered as given; the text says why."""


def parse_qr(text: str) -> dict:
    """The identifiers in a device's QR code: TR005 `LW:D0:JoinEUI:DevEUI:ProfileID[:options]`
    (LoRa Alliance TR005 v1.0) or a DevEUI alone (16 hex digits, separators allowed)."""
    t = (text or "").strip()
    if t.upper().startswith("LW:"):
        parts = t.split(":")
        if len(parts) < 5 or parts[1].upper() != "D0":
            raise DeviceError("a TR005 code reads LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>[:...];"
                              f" got {t[:60]!r}")
        join_eui, dev_eui, profile_id = (p.upper() for p in parts[2:5])
        for what, v in (("JoinEUI", join_eui), ("DevEUI", dev_eui)):
            if not HEX16.match(v):
                raise DeviceError(f"TR005 {what} {v!r} is not 16 hex digits")
        if not re.fullmatch(r"[0-9A-F]{8}", profile_id):
            raise DeviceError(f"TR005 ProfileID {profile_id!r} is not 8 hex digits"
                              " (VendorID and VendorProfileID)")
        out = {"dev_eui": dev_eui, "join_eui": join_eui, "vendor_id": profile_id[:4],
               "vendor_profile_id": profile_id[4:]}
        names = {"O": "owner_token", "S": "serial", "P": "proprietary", "C": "checksum"}
        for opt in parts[5:]:
            if opt and opt[0] in names:
                out[names[opt[0]]] = opt[1:]
        return out
    eui = re.sub(r"[\s:-]", "", t).upper()
    if not HEX16.match(eui):
        raise DeviceError(f"{t[:60]!r} is neither a TR005 LoRaWAN QR code (LW:D0:...) nor a"
                          " DevEUI (16 hex digits)")
    return {"dev_eui": eui}


def _position(lat, lon):
    if lat in (None, "") and lon in (None, ""):
        return None, None
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        raise DeviceError(f"position {lat!r}, {lon!r} is not two numbers") from None
    if not (-90 <= la <= 90 and -180 <= lo <= 180):
        raise DeviceError(f"position {la}, {lo} is off the globe")
    return la, lo


def register(db, dev_eui: str, profile: str, name=None, lat=None, lon=None, node_id=None,
             actor=None) -> str:
    """Register one device; returns its node id (the DevEUI in lower case unless given)."""
    eui = parse_qr(dev_eui)["dev_eui"]
    node = (node_id or eui.lower()).strip()
    if not valid_node_id(node):
        raise DeviceError(f"node id {node!r} is not [a-z0-9-]{{1,32}}")
    if profile == "polylink":
        raise DeviceError("Polylink nodes are registered on the provisioning page (they get"
                          " credentials and OTA keys); pick another profile")
    la, lo = _position(lat, lon)
    try:
        profile_store.register_device(db, node, eui, profile, (name or "").strip() or None,
                                      la, lo, actor=actor)
    except StoreError as e:
        raise DeviceError(str(e)) from None
    return node


def import_csv(db, text: str, actor=None) -> list[dict]:
    """Register every row of a CSV with a header: dev_eui, name, profile, and lat + lon or a
    position "lat lon" (node optional); each row's outcome, the bad ones with why."""
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    if not rows:
        raise DeviceError("the CSV has no rows under its header (dev_eui,name,profile,lat,lon)")
    if len(rows) > MAX_CSV_ROWS:
        raise DeviceError(f"at most {MAX_CSV_ROWS} rows per CSV")
    header = {k.strip().lower() for k in rows[0] if k}
    missing = {"dev_eui", "profile"} - header
    if missing:
        raise DeviceError(f"the CSV header lacks {', '.join(sorted(missing))}")
    out = []
    for i, raw in enumerate(rows, start=2):
        r = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        lat, lon = r.get("lat"), r.get("lon")
        if r.get("position"):
            parts = re.split(r"[\s,;]+", r["position"])
            lat, lon = (parts + [None, None])[:2]
        try:
            node = register(db, r.get("dev_eui", ""), r.get("profile", ""), r.get("name"), lat,
                            lon, r.get("node") or None, actor)
            out.append({"line": i, "node_id": node, "ok": True})
        except DeviceError as e:
            out.append({"line": i, "ok": False, "error": str(e)})
    return out
