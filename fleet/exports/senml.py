"""Batches as SenML packs (RFC 8428), what the webhook and MQTT adapters send.

One pack per node: bn is the node's base name (urn:dev:polylink:<node>:, as the API's
telemetry), bt the time of its first item, each record n (registry name, "/inst" for inst > 0),
u (SenML unit), v and t relative to bt. A record's resolved name and time are its identity: a
receiver that keeps (name, time) unique stores a re-sent batch once. An event is a record named
"event/<code>" with its value as v, or its text as vs when it has one.
"""

from fleet.nodes.senml import BASE_NAME

from .adapter import Item


def pack(node_id: str, items: list[Item]) -> list[dict]:
    """The SenML pack of one node's items, in the order given."""
    out: list[dict] = []
    base = None
    for item in items:
        rec: dict = {}
        if base is None:
            base = item.t
            rec["bn"] = BASE_NAME.format(node=node_id)
            rec["bt"] = item.t
        if item.kind == "reading":
            rec["n"] = item.name
            if item.unit is not None:
                rec["u"] = item.unit
            rec["v"] = item.value
        else:
            rec["n"] = f"event/{item.code}"
            if item.text:
                rec["vs"] = item.text
            else:
                rec["v"] = item.value if item.value is not None else 0
        offset = round(item.t - base, 6)
        if offset:
            rec["t"] = offset
        out.append(rec)
    return out
