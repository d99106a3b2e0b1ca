"""Runs before main.py on every boot: choose the app slot an OTA update left (docs/ota.md).

The factory app lives at the flash root (/polylink); updates live in /a or /b. This file and
main.py are never replaced over the air, so a broken release cannot break the choice.
"""

import sys


def _choose():
    try:  # inside the try, not for RAM: a broken slots module must not stop the boot
        from polylink.ota import slots

        d = slots.boot("")  # counts trial boots; past the limit it reverts by itself
    except Exception as e:  # noqa: BLE001 - nothing here may stop the factory app from booting
        print("polylink: slot choice failed, running the factory app:", e)
        return
    if d:
        # Forget the factory package so `import polylink...` now loads from the slot.
        for name in list(sys.modules):
            if name == "polylink" or name.startswith("polylink."):
                del sys.modules[name]
        sys.path.insert(0, d)


_choose()
