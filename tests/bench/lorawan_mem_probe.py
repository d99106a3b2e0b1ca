"""Heap the LoRaWAN modules take once imported (bench_lorawan.py runs this under the wasm port).

Imports go through __import__ so that they happen in this order, after each baseline.
"""

import gc

for name in ("asyncio", "json", "cryptolib", "polylink.proto", "polylink.store",
             "polylink.config"):
    __import__(name)  # what the app (or, for cryptolib, the ESP32 build) already has
figures = {}
for key, mods in (("crypto_region", ("polylink.lorawan.crypto", "polylink.lorawan.region")),
                  ("lorawan", ("polylink.lorawan.device",)),
                  ("lw_link", ("polylink.lorawan.link",)),
                  ("lw_split", ("polylink.lorawan.split",))):
    gc.collect()
    before = gc.mem_alloc()
    for m in mods:
        __import__(m)
    gc.collect()
    figures[key] = gc.mem_alloc() - before
figures["total"] = sum(figures.values())
for key in ("crypto_region", "lorawan", "lw_link", "lw_split", "total"):
    print(key, figures[key])
