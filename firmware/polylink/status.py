"""The STATUS frame body: what the fleet needs to judge a node's health."""


def body(node, boot=False) -> dict:
    """STATUS fields (docs/architecture.md, Seam 1); rssi is left out while WiFi is down.

    boot: the first STATUS since the reset also names the MicroPython that runs. It changes only
    across a reset, so later STATUS frames leave its 8 bytes out (LoRaWAN DR0 carries 51).
    """
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
    # Frames the node failed to encode or to queue in flash since boot: without it a node
    # dropping every frame looked healthy and online. Sent when 0 too (2 bytes): an absent field
    # keeps the receiver's last value, and the count starts again at each boot.
    b["lost"] = node.encode_errors + node.store_errors
    rssi = hal.wifi_rssi()
    if rssi is not None:
        b["rssi"] = rssi
    if boot:
        v = hal.mpy_version()
        b["micropython"] = "%d.%d.%d" % (v[0], v[1], v[2])
    return b
