"""Decoded telemetry as SenML records (RFC 8428), the fleet's canonical decoded form."""

from polylink import quantities

BASE_NAME = "urn:dev:polylink:{node}:"


def name_and_unit(qid: int, inst: int) -> tuple[str, str | None]:
    """SenML name (instance > 0 as suffix "/<inst>") and unit of a quantity from the registry."""
    if 0 <= qid < quantities.COUNT:
        entry = quantities.QUANTITIES[qid]
        name, unit = entry[quantities.NAME], entry[quantities.UNIT]
    else:
        # A newer node may send a quantity this fleet's registry does not know yet: keep the
        # value under its id rather than dropping it; it has no unit we could vouch for.
        name, unit = f"q{qid}", None
    if inst:
        name = f"{name}/{inst}"
    return name, unit


def number(qid: int, value):
    """A stored value as the spec decodes it: an int for a quantity whose divisor is 1."""
    # The store keeps every value as a REAL, which would print 415 ppm as 415.0.
    if (isinstance(value, float) and 0 <= qid < quantities.COUNT and value.is_integer()
            and quantities.QUANTITIES[qid][quantities.DIV] == 1):
        return int(value)
    return value


def records(node_id: str, rows) -> list[dict]:
    """SenML pack for (t, qid, inst, value) rows of one node; bn and bt go on the first record."""
    pack: list[dict] = []
    base_time = None
    for t, qid, inst, value in rows:
        name, unit = name_and_unit(qid, inst)
        rec: dict = {}
        if base_time is None:
            base_time = t
            rec["bn"] = BASE_NAME.format(node=node_id)
            rec["bt"] = t
        rec["n"] = name
        if unit is not None:
            rec["u"] = unit
        rec["v"] = number(qid, value)
        offset = t - base_time
        if offset:
            rec["t"] = round(offset, 6)
        pack.append(rec)
    return pack


def frame_records(node_id: str, t: float, body) -> list[dict]:
    """SenML pack of one decoded TELEMETRY body (list of (qid, inst, value)) taken at time t."""
    return records(node_id, [(t, qid, inst, value) for qid, inst, value in body])
