"""The STATUS frame body: what the fleet needs to judge a node's health."""


def body(node) -> dict:
    """STATUS fields (docs/architecture.md, Seam 1); rssi is left out while WiFi is down."""
    hal = node.hal
    b = {
        "fw": node.fw,
        "uptime": node.uptime_s(),
        "reset": node.reset_cause,
        "heap_free": hal.mem_free(),
        "queue": node.store.count,
        "dropped": node.store.dropped,
        "boots": node.seq.boots,
        "interval": node.schedule.interval,
    }
    rssi = hal.wifi_rssi()
    if rssi is not None:
        b["rssi"] = rssi
    return b
