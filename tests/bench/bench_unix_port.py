"""The firmware on the MicroPython Unix port (64-bit): object-size ratio against the wasm port
(32-bit, like the ESP32), the smallest heap a node runs on, and nodes per machine against the
CPython host port.

Run: .venv/bin/python tests/bench/bench_unix_port.py [--duration 60] [--nodes 10]

1. ratio: gc.mem_alloc() taken by importing the app (config, drivers, node; .mpy from the
   project's mpy-cross) on the Unix port, against the same figure from the wasm port
   (bench_firmware_mem.py's probe); and the Unix-port simulation's own heap (simsensors,
   SimHardware, unixhal), which an ESP32 does not spend.
2. smallest heap: bisection in 4 KB steps for the smallest -X heapsize at which one node, against
   a real mosquitto, boots, sends STATUS and telemetry for --duration seconds and answers an
   identify and a CONFIG (downlinks) at the start and every 30 s with RESULT ok, without a crash
   or a watchdog reset. --soak HEAP runs only that heap (e.g. 600 s at the figure found).
   No OTA update is part of the run yet (see docs/benchmarks.md).
3. per node: --nodes Unix-port node processes (default heap) and the same number of CPython
   host-port nodes (one process, polylink_host.sim.run), each sampling every second for
   --duration seconds: CPU seconds and resident memory (VmRSS) per node, from /proc.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The repository root first, so `fleet` is the package and not the tests/fleet folder.
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "host")]

from _host_harness import Listener, until  # noqa: E402
from bench_firmware_mem import mpy_tree, run_probe  # noqa: E402
from polylink import proto  # noqa: E402
from polylink_host import unixsim  # noqa: E402
from polylink_host.sim import write_config  # noqa: E402
from services import start_mosquitto  # noqa: E402

RATIO_PROBE = """
import gc, sys
sys.path[0] = %r
gc.collect()
import asyncio
gc.collect(); b = gc.mem_alloc()
from polylink import config
from polylink.drivers import bme280, ds18b20
from polylink.node import Node
gc.collect(); gc.collect()
print("modules", gc.mem_alloc() - b)
b = gc.mem_alloc()
from polylink_host.unixhal import UnixHAL
hw = UnixHAL("n", "/tmp", {"battery": {"adc_pin": 35, "divider": 2.0}})
gc.collect(); gc.collect()
print("simulation", gc.mem_alloc() - b)
"""


def kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def ratio(lib: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
        f.write(RATIO_PROBE % str(lib))
        f.flush()
        out = subprocess.run([unixsim.find_micropython(), "-X", "heapsize=1000000", f.name],
                             capture_output=True, text=True, check=True).stdout
    unix = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
    with tempfile.TemporaryDirectory() as d:
        wasm = run_probe(mpy_tree(Path(d)))
    return {"unix_modules": unix["modules"], "wasm_modules": wasm["modules"],
            "simulation": unix["simulation"], "wasm_resident": wasm["resident_running"]}


async def node_runs(broker, tmp: Path, heap: int, duration: float) -> tuple[bool, str]:
    """One node at this heap: boots, reports, answers two downlinks, runs duration s cleanly."""
    name = f"heap-{heap}"
    lst = Listener(broker)
    root = tmp / name
    write_config(root, name, broker.host, broker.port, interval=1, status_interval=10)
    n = unixsim.UnixNode(name, root, unixsim.firmware_lib(tmp), unixsim.find_micropython(), heap)
    task = asyncio.create_task(n.run())
    try:
        await until(lambda: lst.frames(name, proto.STATUS), 20, "STATUS")
        lst.send(name, proto.COMMAND, {"cid": 1, "cmd": 3, "arg": 2})
        lst.send(name, proto.CONFIG, {"cid": 2, "interval": 1, "status_interval": 10})
        await until(lambda: len({r[3]["cid"] for r in lst.frames(name, proto.RESULT)}) >= 2, 20,
                    "two RESULTs")
        # Downlinks all along the run: an identify and a CONFIG every 30 s.
        end = time.monotonic() + duration
        cid = 2
        while time.monotonic() < end:
            await asyncio.sleep(min(30, max(0, end - time.monotonic())))
            cid += 2
            lst.send(name, proto.COMMAND, {"cid": cid - 1, "cmd": 3, "arg": 1})
            lst.send(name, proto.CONFIG, {"cid": cid, "interval": 1 + cid % 2,
                                          "status_interval": 10})
        await until(lambda: len({r[3]["cid"] for r in lst.frames(name, proto.RESULT)}) >= cid,
                    20, "every RESULT")
        ok = all(r[3]["code"] == 0 for r in lst.frames(name, proto.RESULT))
        why = "" if ok else "a downlink failed: %s" % [r[3] for r in lst.frames(name, proto.RESULT)]
    except AssertionError as e:
        ok, why = False, str(e)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lst.close()
    if n.crashes or n.watchdog_resets:
        ok, why = False, f"{n.crashes} crashes: {' | '.join(list(n.output)[-2:])}"
    return ok, why


def smallest_heap(broker, tmp: Path, duration: float) -> tuple[int, list[str]]:
    lo, hi = 96 * 1024, 192 * 1024  # lo fails (measured), hi runs
    log = []
    while hi - lo > 4096:
        mid = (lo + hi) // 2 // 4096 * 4096
        ok, why = asyncio.run(node_runs(broker, tmp, mid, duration))
        log.append(f"{mid // 1024} KB: {'runs' if ok else 'fails: ' + why[:120]}")
        print("  " + log[-1], flush=True)
        if ok:
            hi = mid
        else:
            lo = mid
    return hi, log


def proc_figures(pid: int) -> tuple[float, int]:
    """(CPU seconds, VmRSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) * 1024 for line in
               Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
    return cpu, rss


async def unix_nodes(broker, tmp: Path, count: int, duration: float) -> tuple[float, float]:
    lib = unixsim.firmware_lib(tmp)
    nodes = []
    for i in range(count):
        name = f"per-mpy-{i:04d}"
        write_config(tmp / name, name, broker.host, broker.port, interval=1, status_interval=10)
        nodes.append(unixsim.UnixNode(name, tmp / name, lib, unixsim.find_micropython(),
                                      unixsim.DEFAULT_HEAPSIZE))
    tasks = [asyncio.create_task(n.run()) for n in nodes]
    await asyncio.sleep(duration)
    figs = [proc_figures(n.proc.pid) for n in nodes if n.proc and n.proc.returncode is None]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sum(c for c, _ in figs) / len(figs), sorted(r for _, r in figs)[len(figs) // 2]


def cpython_nodes(broker, tmp: Path, count: int, duration: float) -> tuple[float, float]:
    code = (
        "import asyncio, sys; from pathlib import Path; from polylink_host import sim\n"
        f"ids = ['per-cpy-%04d' % i for i in range({count})]\n"
        f"asyncio.run(sim.run(ids, Path({str(tmp)!r}), {broker.host!r}, {broker.port}, None,"
        f" None, 1, 10, duration={duration + 5}))\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    time.sleep(duration)
    cpu, rss = proc_figures(p.pid)
    p.wait(30)
    return cpu / count, rss / count


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--skip-heap", action="store_true", help="leave out the bisection")
    ap.add_argument("--soak", type=int, help="only run one node at this heap for --duration s")
    args = ap.parse_args()
    if args.soak:
        with tempfile.TemporaryDirectory() as d:
            broker = start_mosquitto(Path(d) / "broker")
            try:
                ok, why = asyncio.run(node_runs(broker, Path(d), args.soak, args.duration))
            finally:
                broker.stop()
        print(f"heap {kb(args.soak)}, {args.duration:.0f} s with downlinks every 30 s: "
              f"{'runs' if ok else 'fails: ' + why}")
        return 0 if ok else 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r = ratio(unixsim.firmware_lib(tmp))
        print("| figure | Unix port (64-bit) | wasm port (32-bit) | ratio |\n|---|---:|---:|---:|")
        print(f"| app modules imported (.mpy) | {kb(r['unix_modules'])} | "
              f"{kb(r['wasm_modules'])} | {r['unix_modules'] / r['wasm_modules']:.2f} |")
        print(f"| simulation (simsensors + unixhal) | {kb(r['simulation'])} | - | - |")
        print(f"| node resident, running (wasm) | - | {kb(r['wasm_resident'])} | - |")
        broker = start_mosquitto(tmp / "broker")
        try:
            if not args.skip_heap:
                heap, _ = smallest_heap(broker, tmp, args.duration)
                print(f"\nsmallest heap, {args.duration:.0f} s run with downlinks: {kb(heap)} "
                      f"(-X heapsize={heap}); default {kb(unixsim.DEFAULT_HEAPSIZE)}")
            ucpu, urss = asyncio.run(unix_nodes(broker, tmp, args.nodes, args.duration))
            ccpu, crss = cpython_nodes(broker, tmp, args.nodes, args.duration)
        finally:
            broker.stop()
        print(f"\n{args.nodes} nodes each, sampling every 1 s, {args.duration:.0f} s:")
        print("| runtime | CPU s per node | memory per node |\n|---|---:|---:|")
        print(f"| MicroPython Unix port (one process each, VmRSS median) | {ucpu:.2f} | "
              f"{urss / 2**20:.1f} MB |")
        print(f"| CPython host port (one process, VmRSS / nodes) | {ccpu:.2f} | "
              f"{crss / 2**20:.1f} MB |")
        print(f"| ratio | {ucpu / ccpu:.1f} | {urss / crss:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
