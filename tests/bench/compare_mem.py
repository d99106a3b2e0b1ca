"""Firmware heap of several trees side by side, in one run: the existing probes, app as .mpy.

    .venv/bin/python tests/bench/compare_mem.py ROUNDS TREE [TREE ...]

Each TREE is a checkout (git worktree add /tmp/t <commit>; link tests/mpy/node_modules into it);
a name ending in "flat" is run with PYTHONPATH=firmware, so that a tree from before the
subpackages imports its own polylink on the CPython side. Each round runs every tree once, in
turn, so a slow or busy machine touches all of them alike. Prints one line per tree: the median
(and each run) of the dual WiFi+LoRa node on WiFi and on LoRaWAN (dual_mem_probe.py active), the
LoRaWAN modules loaded (lorawan_mem_probe.py) and the WiFi node's modules and resident heap
(firmware_mem_probe.py), in KB.
"""

import json
import os
import statistics
import subprocess
import sys

PROBES = r"""
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, "tests/bench")
import bench_firmware_mem as b
with tempfile.TemporaryDirectory() as d:
    r = b.mpy_tree(Path(d))
    out = {"dual": b.run_probe(r, Path("tests/bench/dual_mem_probe.py"), "active"),
           "lw": b.run_probe(r, Path("tests/bench/lorawan_mem_probe.py")),
           "fw": b.run_probe(r)}
print("RESULT", json.dumps(out))
"""
FIGURES = (("dual", "wifi", "dual on WiFi"), ("dual", "lora", "dual on LoRaWAN"),
           ("lw", "total", "LoRaWAN modules"), ("fw", "modules", "modules imported"),
           ("fw", "resident_running", "resident, running"))


def run(tree: str) -> dict:
    env = dict(os.environ)
    if tree.rstrip("/").endswith("flat"):
        env["PYTHONPATH"] = "firmware"
    proc = subprocess.run([sys.executable, "-c", PROBES], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{tree}: probes failed\n{proc.stdout}\n{proc.stderr}")


def main():
    rounds, trees = int(sys.argv[1]), sys.argv[2:]
    runs = {t: [] for t in trees}
    for _ in range(rounds):
        for t in trees:
            runs[t].append(run(t))
    for t in trees:
        cells = []
        for group, key, label in FIGURES:
            values = [r[group][key] / 1024 for r in runs[t]]
            each = ", ".join(f"{v:.2f}" for v in values)
            cells.append(f"{label} {statistics.median(values):.2f} ({each})")
        print(t + ": " + "; ".join(cells))


if __name__ == "__main__":
    main()
