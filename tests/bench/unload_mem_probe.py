# Runs under MicroPython (tests/mpy/run.mjs script mode); started by bench_lorawan.py. What
# unloading gives back: heap after importing the LoRaWAN modules (and mqtt.py), and what stays
# once they are dropped (config.unload) and collected. Collections happen after control went back
# to the JS event loop: the wasm port frees nothing before. Prints "key value" lines, in bytes.
import asyncio
import gc
import json  # noqa: F401

import cryptolib  # noqa: F401
from polylink import config, proto, store  # noqa: F401


async def col():
    """Heap in use after collections that could free."""
    for _ in range(2):
        await asyncio.sleep(0.05)
        gc.collect()
    return gc.mem_alloc()


async def main():
    a = await col()
    __import__("polylink.lorawan.link")
    b = await col()
    for m in ("lorawan.link", "lorawan.split", "lorawan.mac", "lorawan.join", "lorawan.device",
              "lorawan.crypto", "lorawan.region", "lorawan"):
        config.unload(m)
    c = await col()
    print("lora_import", b - a)
    print("lora_left", c - a)
    a = await col()
    __import__("polylink.net.mqtt")
    b = await col()
    config.unload("net.mqtt")
    c = await col()
    print("mqtt_import", b - a)
    print("mqtt_left", c - a)


await main()  # noqa: F704
