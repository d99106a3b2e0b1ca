"""Provisioning: registering nodes (identity + broker files) and building a node's image.

Run: .venv/bin/python tests/bench/bench_provision.py [--print-only]
Prints a markdown section and (unless --print-only) puts it in docs/benchmarks.md under
"## Provisioning: registration and images". Medians of 3 runs.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

from fleet.broker import auth as brokerauth
from fleet.identity import provision
from fleet.settings import Settings
from fleet.store.migrate import open_db
from provisioning import boards, image

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Provisioning: registration and images"
NODES = 10000
RUNS = 3


def register_many() -> tuple[float, float]:
    """(seconds to register NODES nodes without a file rewrite each, seconds for the one sync)."""
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(data_dir=Path(tmp), port=1, mqtt_port=1, mqtt_url=None)
        db = open_db(s.db_path)
        t = time.perf_counter()
        for i in range(NODES):
            provision.register(db, s, f"b-{i:05d}", board="ESP32_GENERIC", sync=False)
        reg = time.perf_counter() - t
        t = time.perf_counter()
        brokerauth.sync(db, s.broker_dir)
        return reg, time.perf_counter() - t


def build_image() -> float:
    board = boards.load("ESP32_GENERIC")
    t = time.perf_counter()
    image.build(board, {"node": "n"}, {})
    return time.perf_counter() - t


def report() -> str:
    regs = [register_many() for _ in range(RUNS)]
    imgs = [build_image() for _ in range(RUNS)]
    reg = statistics.median(r[0] for r in regs)
    sync = statistics.median(r[1] for r in regs)
    img = statistics.median(imgs)
    return "\n".join([
        HEADING,
        "",
        "`.venv/bin/python tests/bench/bench_provision.py` (medians of 3 runs, this machine, "
        "2 cores shared). Registration is what `make sim NODES=10000` does against "
        "`make run`'s broker (mint, hash, store; then one password-file rewrite and SIGHUP); "
        "the image is the app "
        "compiled with mpy-cross and packed into the 2 MB LittleFS partition of ESP32_GENERIC.",
        "",
        "| what | median |",
        "|---|---:|",
        f"| register {NODES} nodes (store + $7$ hash each) | {reg:.1f} s "
        f"({reg / NODES * 1000:.2f} ms per node) |",
        f"| rewrite passwd/ACL for {NODES} nodes | {sync:.2f} s |",
        f"| build one node image (mpy-cross + LittleFS) | {img:.2f} s |",
        "",
    ])


def update_doc(section):
    text = DOC.read_text(encoding="utf-8")
    if HEADING in text:
        start = text.index(HEADING)
        end = text.find("\n## ", start + len(HEADING))
        end = len(text) if end < 0 else end + 1
        text = text[:start] + section.rstrip("\n") + "\n\n" + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    section = report()
    print(section)
    if "--print-only" not in sys.argv[1:]:
        update_doc(section)
        print(f"updated {DOC.relative_to(ROOT)}")
