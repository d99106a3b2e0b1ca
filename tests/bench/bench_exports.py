"""Exports: readings/s each destination kind takes from the store, the worker's CPU per reading,
and the lag from ingest to acknowledged delivery under a steady ingest load; all kinds side by
side in one run.

Run: .venv/bin/python tests/bench/bench_exports.py [--frames 40000] [--runs 3] [--rates 100,2000]
     [--kinds webhook,ngsi-ld,mqtt,sensorthings] [--sta-frames 5000] [--sta-rates 100] [--batch N]
     [--backends sqlite,postgresql] (drain on each, side by side; PostgreSQL: a throwaway durable
     cluster, tests/pgcluster.py, a fresh database per run; the lag runs are on SQLite)
     [--baseline DIR] (also run the worker of another checkout, e.g. `git archive main | tar x
     -C DIR`, run for run beside this one, its order alternating; the same store schema)

drain  N frames (3 readings each: temperature, humidity, battery voltage; 100 nodes) are stored
       first; then the real export worker process (`fleet export run`) delivers them to one
       destination, timed from its start until the destination has every reading:
       webhook       a local HTTP receiver that reads each POST and answers 204;
       ngsi-ld       a local HTTP receiver that parses each upsert and answers 201 (no JSON-LD
                     expansion: that is the broker's cost, not ours);
       mqtt          the fleet's own mosquitto (project config, logins, ACLs) and a read-only
                     subscriber that parses every SenML pack;
       sensorthings  the real test server (django-ogc-sensorthings on SQLite, tests/sta_server),
                     a new one per run; its first batch also creates 100 Things and 300
                     Datastreams. It takes a few hundred observations/s here, so it gets a
                     smaller backlog (--sta-frames) and is counted by the cursor, then checked
                     against the server's own Observations count.
       Every reading's arrival is counted at the receiver (exactly once asserted for webhook
       and mqtt by (name, time); ngsi-ld by the attributes with observedAt). The worker's CPU
       (user + system, from wait4) per reading is less sensitive than wall time to the other
       work on a shared machine.
lag    one frame per node is delivered first (the destination knows the nodes); then an ingest
       process stores `rate` frames/s through the real Ingest class for 20 s while the worker
       delivers; lag = when the cursor (polled every 20 ms) passed a reading, i.e. when the
       destination acknowledged it, minus the reading's time (its arrival at the ingest).
       p50 and p95 over every reading of a run; medians of the runs. SensorThings only at the
       rates in --sta-rates (the test server cannot take more).
"""

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from polylink import proto  # noqa: E402

from fleet.broker.server import MosquittoBroker, PortInUseError  # noqa: E402
from fleet.exports import readers, registry  # noqa: E402
from fleet.ingest import Ingest  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.store import exports as export_store  # noqa: E402
from fleet.store.migrate import open_db  # noqa: E402

NODES = 100
BODY = [(0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(seq: int) -> bytes:
    buf = bytearray(64)
    return bytes(buf[:proto.encode(buf, proto.TELEMETRY, seq & 0xFFFF, BODY)])


def store(db_path, first: int, n: int, t0: float) -> None:
    """n frames over NODES nodes, one ms apart from t0 (distinct reading times)."""
    db = open_db(db_path)
    ing = Ingest(db)
    for i in range(first, first + n):
        ing.add(f"pl/v1/bench-{i % NODES}/up", frame(i // NODES), t0 + i / 1000)
        if ing.pending >= 2000:
            ing.flush()
    ing.flush()
    db.close()


def ingest_load(db_path, rate: int, seconds: float) -> None:
    """Store `rate` frames/s for `seconds`, in batches every 50 ms, times = arrival."""
    db = open_db(db_path)
    ing = Ingest(db)
    start = time.time()
    sent = 0
    while time.time() - start < seconds:
        due = int((time.time() - start) * rate)
        for i in range(sent, due):
            ing.add(f"pl/v1/bench-{i % NODES}/up", frame(1_000_000 + i // NODES), time.time())
        sent = due
        ing.flush()
        time.sleep(0.05)
    db.close()


class Receiver:
    """HTTP receiver counting readings; for webhooks it notes each reading's lag."""

    def __init__(self, kind: str):
        self.kind = kind
        self.seen: set = set()
        self.count = 0
        self.lags: list[float] = []
        self.lock = threading.Lock()
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                rx.take(body, now)
                self.send_response(204 if rx.kind == "webhook" else 201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, body, now):
        with self.lock:
            if self.kind == "webhook":
                bn = bt = None
                for r in body:
                    bn, bt = r.get("bn", bn), r.get("bt", bt)
                    t = bt + r.get("t", 0)
                    self.seen.add((bn + r["n"], round(t, 6)))
                    self.lags.append(now - t)
            else:
                for e in body:
                    for a in e.values():
                        if isinstance(a, dict) and "observedAt" in a and e["type"] != "Device":
                            self.count += 1

    def readings(self) -> int:
        return len(self.seen) if self.kind == "webhook" else self.count

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/in"


class Subscriber:
    def __init__(self, port, user, password):
        self.seen: set = set()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-reader")
        self.c.username_pw_set(user, password)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("pl/v1/data/+", 1)
        self.c.on_message = self.on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def on_message(self, c, u, m):
        bn = bt = None
        for r in json.loads(m.payload):
            bn, bt = r.get("bn", bn), r.get("bt", bt)
            self.seen.add((bn + r["n"], round(bt + r.get("t", 0), 6)))

    def readings(self):
        return len(self.seen)


BATCH = 2000  # the worker's default (fleet/exports/worker.py)


def worker(settings, tree: Path = ROOT):
    """The export worker process, with the fleet package of checkout `tree` (python -m puts
    its working directory first on sys.path)."""
    env = dict(os.environ, DATA_DIR=str(settings.data_dir), MQTT_PORT=str(settings.mqtt_port))
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return subprocess.Popen([sys.executable, "-m", "fleet.cli", "export", "run", "--batch",
                             str(BATCH)], env=env, cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_of(proc) -> float:
    """Ends the worker; the CPU seconds (user + system) it used in its life."""
    proc.terminate()
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here, not by Popen
    return usage.ru_utime + usage.ru_stime


class Destination:
    """One destination of a kind, its receiver, and what is needed to stop them."""

    def __init__(self, kind: str, settings, db, tmp: Path):
        self.kind, self.settings, self.broker, self.server = kind, settings, None, None
        secret = None
        if kind == "mqtt":
            r = readers.add(db, settings.broker_dir, "bench")
            for _ in range(5):
                try:
                    self.broker = MosquittoBroker(settings.mqtt_port, settings.broker_dir,
                                                  auth=True).start()
                    break
                except PortInUseError:
                    self.settings = settings = replace(settings, mqtt_port=free_port())
            self.rx = Subscriber(settings.mqtt_port, r["username"], r["password"])
            url, options = "fleet", {}
        elif kind == "sensorthings":
            from services import SensorThingsServer

            self.server = SensorThingsServer(tmp / "sta").start()
            self.rx = None  # counted by reading the server's own API back (observations())
            url, options, secret = self.server.url, {}, self.server.login
        else:
            self.rx = Receiver(kind)
            url = self.rx.url
            options = {"context": "https://fleet.example/static/ngsi-ld-context.jsonld"} \
                if kind == "ngsi-ld" else {}
        registry.add(db, settings.data_dir, {"name": "bench", "kind": kind, "url": url,
                                             "options": options}, secret, from_start=True)

    def readings(self, db) -> int:
        """Readings the destination has: counted at the receiver, or for SensorThings (whose
        server we cannot instrument) the delivered count of the cursor, checked against the
        server's Observations at the end (observations())."""
        if self.rx is not None:
            return self.rx.readings()
        return export_store.get_destination(db, "bench")["delivered"]

    def observations(self) -> int:
        """Observations on the SensorThings server, by its API ($count)."""
        import base64
        import urllib.request

        req = urllib.request.Request(
            self.server.url + "/Observations?$count=true&$top=1",
            headers={"Authorization": "Basic "
                     + base64.b64encode(self.server.login.encode()).decode()})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)["@iot.count"]

    def stop(self) -> None:
        if self.broker is not None:
            self.rx.c.loop_stop()
            self.broker.stop()
        if self.server is not None:
            self.server.stop()
        if isinstance(self.rx, Receiver):
            self.rx.server.shutdown()
            self.rx.server.server_close()


def drain(kind: str, frames: int, database_url: str | None = None,
          tree: Path = ROOT) -> tuple[float, float]:
    """(readings/s the worker delivers to one destination of this kind from a full store (the
    SQLite file, or the empty PostgreSQL database database_url names), the worker's CPU
    microseconds per reading)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), port=8000, mqtt_port=free_port(), mqtt_url=None,
                            database_url=database_url)
        db = open_db(settings.db_path)
        store(settings.db_path, 0, frames, 1_700_000_000.0)
        want = frames * len(BODY)
        dest = Destination(kind, settings, db, Path(tmp))
        time.sleep(0.5)
        start = time.monotonic()
        proc = worker(dest.settings, tree)
        try:
            while dest.readings(db) < want:
                if time.monotonic() - start > 900:
                    raise SystemExit(f"{kind}: only {dest.readings(db)} of {want} after 900 s")
                time.sleep(0.02)
            took = time.monotonic() - start
            time.sleep(0.5)
            assert dest.readings(db) == want, (kind, dest.readings(db), want)
            if kind == "sensorthings":
                assert dest.observations() == want, (dest.observations(), want)
            row = export_store.get_destination(db, "bench")
            assert row["refused"] == 0 and row["last_error"] is None, row
        finally:
            cpu = cpu_of(proc)
            db.close()
            dest.stop()
        return want / took, cpu / want * 1e6


def lag(kind: str, rate: int, seconds: float = 20.0,
        tree: Path = ROOT) -> tuple[float, float, int]:
    """(p50, p95) seconds from ingest to acknowledged delivery, and readings, at `rate` frames/s.

    A reading counts as delivered when the destination acknowledged its batch (the worker then
    moves the cursor past it): the bench polls the cursor every 20 ms and gives each reading the
    first poll that saw it passed, minus its time (its arrival at the ingest). The same measure
    for every kind; for the webhook it is a few ms later than arrival at the receiver."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), port=8000, mqtt_port=free_port(), mqtt_url=None)
        db = open_db(settings.db_path)
        dest = Destination(kind, settings, db, Path(tmp))
        # One frame per node first, delivered before the load: the destination knows the nodes
        # (SensorThings creates Things and Datastreams once), as in steady operation.
        store(settings.db_path, 0, NODES, time.time())
        proc = worker(dest.settings, tree)
        try:
            deadline = time.monotonic() + 300
            while export_store.get_destination(db, "bench")["delivered"] < NODES * len(BODY):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{kind}: the nodes' first frames were not delivered")
                time.sleep(0.05)
            first = export_store.get_destination(db, "bench")["reading_pos"]
            load = mp.Process(target=ingest_load, args=(settings.db_path, rate, seconds))
            load.start()
            polls = []  # (time, reading_pos)
            while load.is_alive():
                polls.append((time.time(), export_store.get_destination(db, "bench")
                              ["reading_pos"]))
                time.sleep(0.02)
            load.join()
            stored = db.conn.execute("SELECT rowid, t FROM readings WHERE rowid > ?"
                                     " ORDER BY rowid", [first]).fetchall()
            last = stored[-1][0]
            deadline = time.monotonic() + 600
            while polls[-1][1] < last and time.monotonic() < deadline:
                time.sleep(0.02)
                polls.append((time.time(), export_store.get_destination(db, "bench")
                              ["reading_pos"]))
            assert polls[-1][1] >= last, (kind, polls[-1][1], last)
            row = export_store.get_destination(db, "bench")
            assert row["refused"] == 0 and row["last_error"] is None, row
        finally:
            cpu_of(proc)
            dest.stop()
        lags, i = [], 0
        for rowid, t in stored:
            while polls[i][1] < rowid:
                i += 1
            lags.append(polls[i][0] - t)
        lags.sort()
        return (statistics.median(lags), lags[int(len(lags) * 0.95)], len(stored))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rates", default="100,2000", help="frames/s of the lag runs' ingest")
    # The SensorThings test server (Django ORM on SQLite, one thread) takes a few hundred
    # observations/s on this machine: it gets a smaller backlog and only the rates it can take.
    ap.add_argument("--sta-frames", type=int, default=5000)
    ap.add_argument("--sta-rates", default="100")
    ap.add_argument("--kinds", default="webhook,ngsi-ld,mqtt,sensorthings")
    ap.add_argument("--lag-kinds", default=None, help="kinds of the lag runs (default --kinds)")
    ap.add_argument("--batch", type=int, default=2000, help="the worker's --batch")
    ap.add_argument("--backends", default="sqlite", help="sqlite,postgresql: drain on each")
    ap.add_argument("--compare-batch", type=int, default=None,
                    help="also drain with this --batch, run for run beside --batch")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout whose worker runs beside this one's, run for run")
    args = ap.parse_args()
    if args.baseline is not None:
        return compare(args)
    global BATCH
    BATCH = args.batch
    kinds = [k for k in args.kinds.split(",") if k]
    lag_kinds = kinds if args.lag_kinds is None else [k for k in args.lag_kinds.split(",") if k]
    print(f"batch {BATCH}; drain: {args.frames} frames x {len(BODY)} readings, {NODES} nodes; "
          f"median of {args.runs} runs ({time.strftime('%Y-%m-%d %H:%M')})")
    print("| destination kind | readings/s | worker CPU us/reading | runs (readings/s) |")
    print("|---|---:|---:|---|")
    other: dict[str, list] = {}
    mine_runs: dict[str, list] = {}
    cluster = None
    backends = args.backends.split(",")
    if "postgresql" in backends:
        from pgcluster import PgCluster

        # durable: fsync and synchronous_commit on, as the fleet's own server would run.
        cluster = PgCluster(durable=True).start()
    for kind in kinds:
        frames = args.sta_frames if kind == "sensorthings" else args.frames
        runs = []
        for run in range(args.runs):
            runs.append(drain(kind, frames))
            if cluster is not None:  # the backends side by side in each run
                cluster.sql(f"CREATE DATABASE drain{run}")
                other.setdefault(f"{kind} on PostgreSQL", []).append(
                    drain(kind, frames, cluster.url(f"drain{run}")))
                cluster.sql(f"DROP DATABASE drain{run} WITH (FORCE)")
            if args.compare_batch and kind != "sensorthings":
                BATCH = args.compare_batch
                other.setdefault(kind, []).append(drain(kind, frames))
                BATCH = args.batch
        mine_runs[kind] = runs
        rates = [r[0] for r in runs]
        print(f"| {kind} ({frames * len(BODY):,} readings) | {statistics.median(rates):,.0f} |"
              f" {statistics.median(r[1] for r in runs):.1f} | "
              + " / ".join(f"{r:,.0f}" for r in rates) + " |", flush=True)
    if cluster is not None:
        cluster.stop()
    if other:
        print(f"\n| destination kind | readings/s, batch {args.batch} (SQLite) | the other |"
              f" CPU us/reading, batch {args.batch} | the other |  (the other: batch"
              f" {args.compare_batch} on SQLite, or batch {args.batch} on PostgreSQL)")
        print("|---|---:|---:|---:|---:|")
        for kind, runs in other.items():
            mine = mine_runs[kind.split(" ")[0]]
            print(f"| {kind} | {statistics.median(r[0] for r in mine):,.0f} |"
                  f" {statistics.median(r[0] for r in runs):,.0f} |"
                  f" {statistics.median(r[1] for r in mine):.1f} |"
                  f" {statistics.median(r[1] for r in runs):.1f} |")
    print("\n| destination kind | ingest frames/s (readings/s) | lag p50 | lag p95 |"
          " p95 of the runs |")
    print("|---|---:|---:|---:|---|")
    for rate in [int(r) for r in args.rates.split(",") if r]:
        for kind in lag_kinds:
            if kind == "sensorthings" and str(rate) not in args.sta_rates.split(","):
                continue
            runs = [lag(kind, rate) for _ in range(args.runs)]
            p50 = statistics.median(r[0] for r in runs)
            p95 = statistics.median(r[1] for r in runs)
            print(f"| {kind} | {rate:,} ({rate * len(BODY):,}) | {p50:.2f} s | {p95:.2f} s | "
                  + " / ".join(f"{r[1]:.2f}" for r in runs) + " |", flush=True)


def compare(args) -> None:
    """Drain and lag runs of the baseline checkout's worker and this one's, run for run in one
    run (who goes first alternates), medians and the ratio of the medians."""
    base = args.baseline.resolve()
    if not (base / "fleet" / "exports" / "worker.py").exists():
        raise SystemExit(f"--baseline {base}: not a checkout of this project (no fleet/exports)")
    kinds = [k for k in args.kinds.split(",") if k]
    lag_kinds = kinds if args.lag_kinds is None else [k for k in args.lag_kinds.split(",") if k]
    print(f"before: {base}; after: {ROOT}; batch {BATCH}; medians of {args.runs} runs, the two"
          f" alternating ({time.strftime('%Y-%m-%d %H:%M')})")

    def pair(run, fn, *fn_args):
        trees = (base, ROOT) if run % 2 == 0 else (ROOT, base)
        got = {tree: fn(*fn_args, tree=tree) for tree in trees}
        return got[base], got[ROOT]

    if kinds:
        print(f"\ndrain: {args.frames} frames x {len(BODY)} readings, {NODES} nodes")
        print("| destination kind | readings/s before | after | after/before |"
              " CPU us/reading before | after | runs before | runs after |")
        print("|---|---:|---:|---:|---:|---:|---|---|")
    for kind in kinds:
        frames = args.sta_frames if kind == "sensorthings" else args.frames
        runs = [pair(run, drain, kind, frames)
                for run in range(args.runs)]
        b = statistics.median(r[0][0] for r in runs)
        a = statistics.median(r[1][0] for r in runs)
        print(f"| {kind} | {b:,.0f} | {a:,.0f} | {a / b:.2f}x |"
              f" {statistics.median(r[0][1] for r in runs):.1f} |"
              f" {statistics.median(r[1][1] for r in runs):.1f} |"
              f" {' / '.join(f'{r[0][0]:,.0f}' for r in runs)} |"
              f" {' / '.join(f'{r[1][0]:,.0f}' for r in runs)} |", flush=True)
    rates = [int(r) for r in args.rates.split(",") if r]
    if rates and lag_kinds:
        print("\n| destination kind | ingest frames/s (readings/s) | p50 before | after |"
              " p95 before | after | p95 runs before | p95 runs after |")
        print("|---|---:|---:|---:|---:|---:|---|---|")
    for rate in rates:
        for kind in lag_kinds:
            if kind == "sensorthings" and str(rate) not in args.sta_rates.split(","):
                continue
            runs = [pair(run, lag, kind, rate)
                    for run in range(args.runs)]
            med = [[statistics.median(r[side][i] for r in runs) for i in (0, 1)]
                   for side in (0, 1)]
            print(f"| {kind} | {rate:,} ({rate * len(BODY):,}) | {med[0][0]:.2f} s |"
                  f" {med[1][0]:.2f} s | {med[0][1]:.2f} s | {med[1][1]:.2f} s |"
                  f" {' / '.join(f'{r[0][1]:.2f}' for r in runs)} |"
                  f" {' / '.join(f'{r[1][1]:.2f}' for r in runs)} |", flush=True)


if __name__ == "__main__":
    main()
