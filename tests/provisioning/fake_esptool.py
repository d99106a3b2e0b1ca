"""Stands in for esptool where no ESP32 can be attached (these tests run with a pty as the port).

It records every command line to $FAKE_TOOL_LOG (one JSON list per line) and answers as esptool
5.x does: `flash-id` prints "Connected to <CHIP> on <port>:", "Chip type:", "MAC:" and
"Detected flash size:" lines in esptool's own format; `write-flash` and `erase-flash`
check their files and print esptool's summary lines. The chip it pretends to be comes from
$FAKE_CHIP (ESP32, ESP32-S3), $FAKE_FLASH (4MB, ...) and $FAKE_MAC (else one per port);
$FAKE_NO_CHIP=1 makes it fail the way esptool does when nothing answers on the port.
"""

import json
import os
import sys


def main(argv):
    with open(os.environ["FAKE_TOOL_LOG"], "a") as log:
        log.write(json.dumps(["esptool"] + argv) + "\n")
    port = argv[argv.index("--port") + 1] if "--port" in argv else None
    if port is not None and not os.path.exists(port):
        print(f"A fatal error occurred: Could not open {port}, the port is busy or doesn't exist.")
        return 2
    chip = os.environ.get("FAKE_CHIP", "ESP32")
    if os.environ.get("FAKE_NO_CHIP") and port:
        print(f"A fatal error occurred: Failed to connect to {chip}: No serial data received.")
        return 2
    if "flash-id" in argv:
        desc = {"ESP32": "ESP32-D0WD-V3 (revision v3.1)",
                "ESP32-S3": "ESP32-S3 (QFN56) (revision v0.2)"}[chip]
        print(f"Connected to {chip} on {port}:")
        print(f"{'Chip type:':<20}{desc}")
        print(f"{'Features:':<20}Wi-Fi, BT, Dual Core + LP Core, 240MHz")
        print(f"{'Crystal frequency:':<20}40MHz")
        # Each pty is another board: its own MAC unless $FAKE_MAC says otherwise.
        n = sum(port.encode()) % 256 if port else 0
        mac = os.environ.get("FAKE_MAC") or f"24:6f:28:aa:bb:{n:02x}"
        print(f"{'MAC:':<20}{mac}")
        print()
        print("Manufacturer: 20")
        print("Device: 4016")
        print(f"Detected flash size: {os.environ.get('FAKE_FLASH', '4MB')}")
        return 0
    if "write-flash" in argv:
        args = [a for a in argv[argv.index("write-flash") + 1:] if not a.startswith("-")]
        for offset, path in zip(args[::2], args[1::2], strict=True):
            size = os.path.getsize(path)
            print(f"Wrote {size} bytes at {offset} in 1.0 seconds.")
        print("Hard resetting via RTS pin...")
        return 0
    if "erase-flash" in argv:
        print("Flash memory erased successfully in 2.0 seconds.")
        return 0
    print(f"fake esptool: command not imitated: {argv}", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
