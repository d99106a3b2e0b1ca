# Runs under MicroPython (tests/mpy/run.mjs script mode, top-level await allowed); started by
# bench_ota.py. The heap the runtime-image module takes, imported into a fresh interpreter that
# already holds what an updating node holds (the app's resident modules and the OTA agent): the
# same figure ota_mem_probe.py measures late in its run, where garbage left by the streams before
# it can be collected during the import and make the difference meaningless (even negative).
import asyncio
import binascii  # noqa: F401
import gc
import hashlib  # noqa: F401
import json  # noqa: F401

from polylink import config, proto, store  # noqa: F401
from polylink.net import http  # noqa: F401
from polylink.ota import agent, slots  # noqa: F401
from polylink_host import esp32sim  # noqa: F401


async def settled():
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0)
    return gc.mem_alloc()


base = await settled()  # noqa: F704
from polylink.ota import runtime  # noqa: E402,F401

print("runtime_module", await settled() - base)  # noqa: F704
