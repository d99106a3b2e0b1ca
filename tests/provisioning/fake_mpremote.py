"""Stands in for mpremote where no board is attached: records command lines, imitates its output.

Command lines go to $FAKE_TOOL_LOG (one JSON list per line). The board's filesystem is the
directory $FAKE_DEVICE_DIR. `exec` answers like a MicroPython of version $FAKE_MP_VERSION
(default 1.29.0; .mpy v6 from 1.23 on, v5 before); `cp [-r] SRC... :` copies like mpremote 1.29
does: "cp SRC :" per argument (its verbose line) and, per file whose SHA-256 already matches on
the board, "Up to date: PATH" instead of a copy; `+ reset` is accepted.
"""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path


def main(argv):
    with open(os.environ["FAKE_TOOL_LOG"], "a") as log:
        log.write(json.dumps(["mpremote"] + argv) + "\n")
    if argv[:1] == ["connect"] and not os.path.exists(argv[1]):
        print(f"mpremote: failed to access {argv[1]} (it may be in use by another program)")
        return 1
    device = Path(os.environ["FAKE_DEVICE_DIR"])
    version = os.environ.get("FAKE_MP_VERSION", "1.29.0")
    args = argv[2:] if argv[:1] == ["connect"] else argv
    if args[:1] == ["exec"]:
        major, minor = (int(x) for x in version.split(".")[:2])
        print(f"mpy {6 if (major, minor) >= (1, 23) else 5} ver {version}")
        return 0
    if args[:1] == ["cp"]:
        srcs = [a for a in args[1:args.index(":")] if a != "-r"]
        for src in srcs:
            print(f"cp {src} :")
            src = Path(src)
            files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
            for f in files:
                rel = f.relative_to(src.parent)
                dest = device / rel
                if dest.exists() and (hashlib.sha256(dest.read_bytes()).digest()
                                      == hashlib.sha256(f.read_bytes()).digest()):
                    print(f"Up to date: {rel}")
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
        return 0
    print(f"fake mpremote: command not imitated: {argv}", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
