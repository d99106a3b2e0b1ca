"""Every topic of the fleet's own MQTT broker, and the ACL lines that guard them.

A node publishes frames on pl/v1/{node}/up and its connection state on .../conn, and reads
downlinks on .../down (docs/protocol.md). A board claiming an identity asks on
pl/v1/claim/{token id}/{claim id}/req and reads the answer on .../resp (identity/claims.py).
"""

ROOT = "pl/v1"


def up(node: str) -> str:
    return f"{ROOT}/{node}/up"


def conn(node: str) -> str:
    return f"{ROOT}/{node}/conn"


def senml(node: str) -> str:
    """SenML packs (RFC 8428, JSON or CBOR) about one node, from itself or its supplier."""
    return f"{ROOT}/{node}/senml"


def down(node: str) -> str:
    return f"{ROOT}/{node}/down"


# Normalized readings for integrators (fleet/exports/mqtt.py): pl/v1/data/{node}. "data" is
# therefore no node id (identity/provision.py refuses it) and the ingest ignores this subtree.
DATA = "data"


def data(node: str) -> str:
    return f"{ROOT}/{DATA}/{node}"


def is_data(topic: str) -> bool:
    return topic.startswith(f"{ROOT}/{DATA}/")


def claim_request(token_id: str, claim_id: str) -> str:
    return f"{ROOT}/claim/{token_id}/{claim_id}/req"


def claim_answer(token_id: str, claim_id: str) -> str:
    return f"{ROOT}/claim/{token_id}/{claim_id}/resp"


def node_topic(topic: str) -> tuple[str, str] | None:
    """(node, "up" | "conn" | ...) of a pl/v1/{node}/{kind} topic, None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != ROOT:
        return None
    return parts[2], parts[3]


def claim_topic(topic: str) -> tuple[str, str] | None:
    """(token id, claim id) of a claim request topic, None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 6:
        return None
    return parts[3], parts[4]


# What the ingest worker reads: every node's frames and connection state.
UPLINKS = [(up("+"), 1), (conn("+"), 1), (senml("+"), 1)]


def shared(group: str, subscriptions: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The same subscriptions as an MQTT 5 shared subscription: the broker hands each message
    to one member of the group (N ingest workers split the stream instead of each taking all)."""
    if not group or "/" in group or "+" in group or "#" in group:
        raise ValueError(f"share group {group!r}: expected a name without / + #")
    return [(f"$share/{group}/{topic}", qos) for topic, qos in subscriptions]
CLAIM_REQUESTS = claim_request("+", "+")
# mosquitto ACL lines (broker/auth.py): %u is the login, %c the client id.
SERVICE_ACLS = {
    # $SYS: the upkeep worker reads the broker's queue depth with this login (broker/sysstats.py).
    "ingest": [f"topic read {up('+')}", f"topic read {conn('+')}",
               "topic read $SYS/broker/store/messages/count",
               "topic read $SYS/broker/clients/connected", f"topic read {senml('+')}"],
    "fleet": [f"topic write {down('+')}"],
    "claims": [f"topic read {CLAIM_REQUESTS}", f"topic write {claim_answer('+', '+')}"],
    "exports": [f"topic write {data('+')}"],
}
def supplier_user(name: str) -> str:
    """A supplier's broker login: a '.' no node id has, so it never names a node."""
    return f"supplier.{name}"


NODE_ACL = [f"pattern write {up('%u')}", f"pattern write {conn('%u')}",
            f"pattern write {senml('%u')}",
            f"pattern read {down('%u')}"]
CLAIM_ACL = [f"pattern write {claim_request('%u', '%c')}",
             f"pattern read {claim_answer('%u', '%c')}"]
