"""SenML (RFC 8428) packs from suppliers' gateways and clouds: JSON or CBOR, resolved as the RFC
says (section 4.6), then mapped to registry quantities like any other profile's fields.

Resolution: a base field (bn, bt, bu, bv, bs) applies to its record and every later one until
another record changes it; the name is bn + n, the time bt + t, the value bv + v, the unit u or
else bu. A resolved time below 2**28 is relative to now (section 4.5.3). Only numeric values (v,
s) become readings; string, boolean and data values are skipped and said so.
"""

import json
import math
import re

import cbor2
from polylink import quantities

from . import units

RELATIVE_BELOW = 2 ** 28
MAX_RECORDS = 1000
# CBOR labels (RFC 8428 section 6, table 4).
_CBOR = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", 0: "n", 1: "u", 2: "v",
         3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*\Z")
SUPPORTED_VERSION = 10


class SenmlError(ValueError):
    """The pack is not valid SenML; the text says which record and why."""


def parse(payload: bytes) -> list[dict]:
    """The pack's records as dicts with string keys, from JSON or CBOR (told by the first byte)."""
    if not payload:
        raise SenmlError("empty SenML pack")
    try:
        if payload[:1] in (b"[", b" ", b"\n", b"\t", b"\r"):
            pack = json.loads(payload)
        else:
            pack = cbor2.loads(payload)
            if isinstance(pack, list):
                pack = [{_CBOR.get(k, k) if isinstance(k, int) else k: v for k, v in r.items()}
                        if isinstance(r, dict) else r for r in pack]
    except (ValueError, cbor2.CBORDecodeError) as e:
        raise SenmlError(f"neither SenML JSON nor CBOR: {e}") from None
    if not isinstance(pack, list) or not pack:
        raise SenmlError("a SenML pack is a non-empty array of records")
    if len(pack) > MAX_RECORDS:
        raise SenmlError(f"more than {MAX_RECORDS} records in one pack")
    return pack


def _num(rec, key, i):
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SenmlError(f"record {i}: {key} must be a finite number, got {v!r}")
    return float(v)


def resolve(pack: list, now: float) -> tuple[list[tuple[str, str | None, float, float]], list]:
    """([(name, unit, value, time)] of the numeric records, [why each other was skipped])."""
    bn, bt, bu, bv, bs = "", 0.0, None, 0.0, 0.0
    out, skipped = [], []
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise SenmlError(f"record {i} is not an object")
        if rec.get("bver") is not None and (not isinstance(rec["bver"], int)
                                            or rec["bver"] > SUPPORTED_VERSION):
            raise SenmlError(f"record {i}: bver {rec['bver']!r} is newer than version 10")
        if any(k.endswith("_") for k in rec if isinstance(k, str)):
            raise SenmlError(f"record {i}: a field ending in _ must be understood (RFC 8428"
                             " 4.4) and this one is not")
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise SenmlError(f"record {i}: bn must be a string")
            bn = rec["bn"]
        bt = _num(rec, "bt", i) if "bt" in rec else bt
        bv = _num(rec, "bv", i) if "bv" in rec else bv
        bs = _num(rec, "bs", i) if "bs" in rec else bs
        if "bu" in rec:
            bu = rec["bu"] if isinstance(rec["bu"], str) else None
        n = rec.get("n", "")
        if not isinstance(n, str):
            raise SenmlError(f"record {i}: n must be a string")
        name = bn + n
        if not _NAME.match(name):
            raise SenmlError(f"record {i}: name {name!r} is not a valid SenML name")
        t = bt + (_num(rec, "t", i) or 0.0)
        if t < RELATIVE_BELOW:
            t += now
        unit = rec.get("u", bu)
        if "v" in rec:
            out.append((name, unit, bv + _num(rec, "v", i), t))
        elif "s" in rec:
            out.append((name, unit, bs + _num(rec, "s", i), t))
        elif any(k in rec for k in ("vs", "vb", "vd")):
            skipped.append(f"{name}: only numeric values become readings")
        elif not any(k.startswith("b") for k in rec if isinstance(k, str)):
            raise SenmlError(f"record {i} ({name}) has no value")
    return out, skipped


def readings(records, fields=()) -> tuple[list[tuple], list[str]]:
    """([(qid, inst, value, t, name)], [why a record was not taken]) of resolved records.

    With a mapping (a senml profile's fields), a field matches the resolved name or its last
    part; without one the last part (after ':' or '/') must be a registry quantity's name.
    """
    by_field = {f["field"]: f for f in fields}
    out, skipped = [], []
    for name, unit, value, t in records:
        last = re.split(r"[:/]", name)[-1]
        f = by_field.get(name) or by_field.get(last)
        qname = f["quantity"] if f else last
        qid = quantities.lookup(qname) if (f or not by_field) else None
        if qid is None:
            skipped.append(f"{name}: no registry quantity")
            continue
        senml_unit = quantities.QUANTITIES[qid][quantities.UNIT]
        try:
            v = units.convert(value, unit or (f or {}).get("unit"), senml_unit)
        except units.UnitError as e:
            skipped.append(f"{name}: {e}")
            continue
        out.append((qid, (f or {}).get("inst", 0), v, t, name))
    return out, skipped
