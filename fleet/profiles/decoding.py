"""A profile made ready to decode: codec + field mapping -> (quantity id, instance, value) in the
registry's SenML units. The provider ingest and the codec try-out both use this one class."""

import math
import re

from polylink import quantities

from fleet.senml import units

from . import CODECS, POLYLINK, lpp
from .jscodec import CodecError, JsCodec

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
MAX_FIELDS = 64
MAX_COMMANDS = 32


class ProfileError(ValueError):
    """A profile as given cannot be used; the text says which part and why."""


def _quantity(name):
    qid = quantities.lookup(name)
    if qid is None:
        names = ", ".join(q[quantities.NAME] for q in quantities.QUANTITIES)
        raise ProfileError(f"no quantity {name!r} in the registry; known: {names}")
    return qid


def check(p: dict) -> dict:
    """The profile with its mapping checked and normalised; ProfileError says what is wrong."""
    for key in ("name", "codec", "source", "description"):
        if p.get(key) is not None and not isinstance(p[key], str):
            raise ProfileError(f"{key} must be a string")
    name = p.get("name") or ""
    if not NAME.match(name):
        raise ProfileError(f"name {name!r} must be 1-64 of a-z 0-9 _ - (starting a-z or 0-9)")
    codec = p.get("codec")
    if codec not in CODECS:
        raise ProfileError(f"codec {codec!r} must be one of {', '.join(CODECS)}")
    if (name == POLYLINK) != (codec == POLYLINK):
        raise ProfileError("only the built-in profile 'polylink' uses the polylink codec")
    source = p.get("source") or None
    if codec == "js" and not source:
        raise ProfileError("a js profile needs its codec's JavaScript source")
    if codec != "js" and source:
        raise ProfileError(f"codec {codec} takes no source (only js does)")
    fields = p.get("fields") or []
    if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
        raise ProfileError(f"fields must be a list of at most {MAX_FIELDS} mappings")
    out = []
    for i, f in enumerate(fields):
        if not isinstance(f, dict) or not isinstance(f.get("field"), str) or not f["field"]:
            raise ProfileError(f"fields[{i}] must be an object with a field name")
        unknown = set(f) - {"field", "quantity", "unit", "inst"}
        if unknown:
            raise ProfileError(f"fields[{i}]: unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(f.get("quantity"), str) or not (
                f.get("unit") is None or isinstance(f["unit"], str)):
            raise ProfileError(f"fields[{i}]: quantity and unit must be strings")
        qid = _quantity(f.get("quantity"))
        inst = f.get("inst", 0)
        if not isinstance(inst, int) or isinstance(inst, bool) or not 0 <= inst <= 255:
            raise ProfileError(f"fields[{i}]: inst must be 0..255")
        try:
            units.converter(f.get("unit"), quantities.QUANTITIES[qid][quantities.UNIT])
        except units.UnitError as e:
            raise ProfileError(f"fields[{i}] ({f['field']}): {e}") from None
        out.append({"field": f["field"], "quantity": f["quantity"], "unit": f.get("unit"),
                    "inst": inst})
    interval = p.get("interval")
    if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)
                                 or not 10 <= interval <= 7 * 86400):
        raise ProfileError("interval must be whole seconds, 10 .. 604800")
    commands = p.get("commands") or []
    if not isinstance(commands, list) or len(commands) > MAX_COMMANDS or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in commands):
        raise ProfileError(f"commands must be a list of at most {MAX_COMMANDS} objects with a"
                           " name (and the data encodeDownlink takes)")
    if commands and codec != "js":
        raise ProfileError("only a js codec can encode downlink commands")
    checked = {"name": name, "codec": codec, "source": source, "fields": out,
               "interval": interval, "commands": commands,
               "description": (p.get("description") or None)}
    if codec == "js":
        try:
            JsCodec(source)
        except CodecError as e:
            raise ProfileError(str(e)) from None
    return checked


def _lookup(data: dict, path: list[str]):
    v = data
    for part in path:
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return v


class Decoder:
    """One profile, ready: decode() gives readings or raises CodecError with why not."""

    def __init__(self, profile: dict):
        self.profile = profile
        self.codec = profile["codec"]
        self.js = JsCodec(profile["source"]) if self.codec == "js" else None
        self.mapping = []
        for f in profile.get("fields") or []:
            qid = quantities.lookup(f["quantity"])
            factor, offset = units.converter(f.get("unit"),
                                             quantities.QUANTITIES[qid][quantities.UNIT])
            self.mapping.append((f["field"], f["field"].split("."), qid, f.get("inst", 0),
                                 factor, offset))

    def fields(self, payload: bytes, fport: int, recv_time: float, provided=None) -> dict:
        """The codec's own output: {data, warnings}."""
        if self.codec == "lpp":
            try:
                return {"data": lpp.decode(payload), "warnings": []}
            except lpp.LppError as e:
                raise CodecError(f"Cayenne LPP: {e}") from None
        if self.codec == "js":
            return self.js.decode(payload, fport, recv_time)
        if self.codec == "passthrough":
            if not isinstance(provided, dict):
                raise CodecError("the provider sent no decoded payload (TTS decoded_payload,"
                                 " ChirpStack object) for this passthrough profile")
            return {"data": provided, "warnings": []}
        raise CodecError(f"codec {self.codec} does not decode LoRaWAN payloads")

    def readings(self, data: dict) -> list[tuple[int, int, float]]:
        """(qid, inst, value) of the mapped fields present in data, in SenML units."""
        out = []
        if not self.mapping:
            if self.codec == "lpp":
                for q, inst, value, unit in lpp.mapped(data):
                    qid = quantities.lookup(q)
                    out.append((qid, inst, _number(q, units.convert(
                        value, unit, quantities.QUANTITIES[qid][quantities.UNIT]))))
                return out
            # No mapping: fields named as registry quantities, already in the registry's unit.
            for key, value in data.items():
                qid = quantities.lookup(key)
                if qid is not None:
                    out.append((qid, 0, _number(key, value)))
            return out
        for field, path, qid, inst, factor, offset in self.mapping:
            value = _lookup(data, path)
            if value is None:
                continue  # devices leave fields out of some frames
            out.append((qid, inst, _number(field, value) * factor + offset))
        return out

    def decode(self, payload: bytes, fport: int, recv_time: float, provided=None):
        """(readings, codec output) of one uplink; CodecError if the codec or a value fails."""
        out = self.fields(payload, fport, recv_time, provided)
        return self.readings(out["data"]), out


def _number(field, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError(f"field {field} is {value!r}, not a number")
    if not math.isfinite(value):
        raise CodecError(f"field {field} is not a finite number")
    return float(value)
