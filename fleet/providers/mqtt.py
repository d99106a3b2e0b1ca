"""The fleet's own MQTT broker (WiFi nodes): topics `pl/v1/{node}/up|down|conn`.

Its uplinks take the fast path in fleet/ingest.py (a raw frame per message, the node id in the
topic, no JSON); this module names the shapes so every provider has one adapter module.
"""

from fleet import topics

KIND = "mqtt"
TITLE = "Fleet MQTT broker"


def subscriptions(cfg=None) -> list[tuple[str, int]]:
    return list(topics.UPLINKS)


def downlink_topic(cfg, node_id: str) -> str:
    return topics.down(node_id)


def downlink_message(frame: bytes, fport=None, confirmed=False, dev_eui="") -> bytes:
    return frame
