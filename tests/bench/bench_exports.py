"""Exports: readings/s each destination kind takes from the store, and the lag from ingest to
destination under a steady ingest load.

Run: .venv/bin/python tests/bench/bench_exports.py [--frames 40000] [--runs 3] [--rate 2000]
     [--backends sqlite,postgresql] (PostgreSQL: a throwaway durable cluster, tests/pgcluster.py;
     a fresh database per run; --rate 0 leaves the lag runs out)

drain  N frames (3 readings each: temperature, humidity, battery voltage; 100 nodes) are stored
       first; then the real export worker process (`fleet export run`) delivers them to one
       destination, timed from its start until the destination's cursor has every reading:
       webhook  a local HTTP receiver that reads each POST and answers 204;
       ngsi-ld  a local HTTP receiver that parses each upsert and answers 201 (no JSON-LD
                expansion: that is the broker's cost, not ours);
       mqtt     the fleet's own mosquitto (project config, logins, ACLs) and a read-only
                subscriber that parses every SenML pack.
       Every reading's arrival is counted at the receiver (exactly once asserted for webhook
       and mqtt by (name, time); ngsi-ld by the attributes with observedAt).
lag    an ingest process stores `rate` frames/s through the real Ingest class for 20 s while
       the worker delivers to the webhook receiver; lag = arrival time at the receiver minus
       the reading's time (its arrival at the ingest, no device timestamp). p50 and p95.
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
sys.path.insert(0, str(ROOT))

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


BATCH = 500


def worker(settings):
    env = dict(os.environ, DATA_DIR=str(settings.data_dir), MQTT_PORT=str(settings.mqtt_port))
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return subprocess.Popen([sys.executable, "-m", "fleet.cli", "export", "run", "--batch",
                             str(BATCH)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drain(kind: str, frames: int, database_url: str | None = None) -> float:
    """readings/s the worker delivers to one destination of this kind from a full store (the
    SQLite file, or the empty PostgreSQL database database_url names)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), port=8000, mqtt_port=free_port(), mqtt_url=None,
                            database_url=database_url)
        db = open_db(settings.db_path)
        store(settings.db_path, 0, frames, 1_700_000_000.0)
        want = frames * len(BODY)
        broker = None
        if kind == "mqtt":
            r = readers.add(db, settings.broker_dir, "bench")
            for _ in range(5):
                try:
                    broker = MosquittoBroker(settings.mqtt_port, settings.broker_dir,
                                             auth=True).start()
                    break
                except PortInUseError:
                    settings = replace(settings, mqtt_port=free_port())
            rx = Subscriber(settings.mqtt_port, r["username"], r["password"])
            url, options = "fleet", {}
        else:
            rx = Receiver(kind)
            url = rx.url
            options = {"context": "https://fleet.example/static/ngsi-ld-context.jsonld"} \
                if kind == "ngsi-ld" else {}
        registry.add(db, settings.data_dir, {"name": "bench", "kind": kind, "url": url,
                                             "options": options}, None, from_start=True)
        time.sleep(0.5)
        start = time.monotonic()
        proc = worker(settings)
        try:
            while rx.readings() < want:
                if time.monotonic() - start > 600:
                    raise SystemExit(f"{kind}: only {rx.readings()} of {want} after 600 s")
                time.sleep(0.02)
            took = time.monotonic() - start
            time.sleep(0.5)
            assert rx.readings() == want, (kind, rx.readings(), want)
            row = export_store.get_destination(db, "bench")
            assert row["refused"] == 0 and row["last_error"] is None, row
        finally:
            proc.terminate()
            proc.wait(30)
            db.close()
            if broker is not None:
                rx.c.loop_stop()
                broker.stop()
        return want / took


def lag(rate: int, seconds: float = 20.0) -> tuple[float, float, int]:
    """(p50, p95) seconds from ingest to the webhook receiver, and readings, at `rate` frames/s."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), port=8000, mqtt_port=1, mqtt_url=None)
        db = open_db(settings.db_path)
        rx = Receiver("webhook")
        registry.add(db, settings.data_dir, {"name": "bench", "kind": "webhook",
                                             "url": rx.url}, None)
        proc = worker(settings)
        time.sleep(2)  # the worker is up and idle
        load = mp.Process(target=ingest_load, args=(settings.db_path, rate, seconds))
        load.start()
        load.join()
        want = export_store.backlog(db, export_store.START, [], [])
        deadline = time.monotonic() + 120
        while rx.readings() < want and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.terminate()
        proc.wait(30)
        assert rx.readings() == want, (rx.readings(), want)
        lags = sorted(rx.lags)
        return (statistics.median(lags), lags[int(len(lags) * 0.95)], want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=2000, help="frames/s of the lag run's ingest")
    ap.add_argument("--kinds", default="webhook,ngsi-ld,mqtt")
    ap.add_argument("--batch", type=int, default=500, help="the worker's --batch")
    ap.add_argument("--backends", default="sqlite", help="sqlite,postgresql: drain on each")
    args = ap.parse_args()
    global BATCH
    BATCH = args.batch
    print(f"batch {BATCH}; drain: {args.frames} frames x {len(BODY)} readings, {NODES} nodes; "
          f"median of {args.runs} runs")
    cluster = None
    if "postgresql" in args.backends:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgcluster import PgCluster

        # durable: fsync and synchronous_commit on, as the fleet's own server would run.
        cluster = PgCluster(durable=True).start()
    try:
        for kind in [k for k in args.kinds.split(",") if k]:
            rates: dict[str, list[float]] = {b: [] for b in args.backends.split(",")}
            for run in range(args.runs):  # the backends side by side in each run
                for backend in rates:
                    url = None
                    if backend == "postgresql":
                        cluster.sql(f"CREATE DATABASE drain{run}")
                        url = cluster.url(f"drain{run}")
                    rates[backend].append(drain(kind, args.frames, url))
                    if url:
                        cluster.sql(f"DROP DATABASE drain{run} WITH (FORCE)")
            for backend, runs in rates.items():
                print(f"  {kind:<8} {backend:<10} {statistics.median(runs):>8,.0f} readings/s"
                      "  (runs: " + " / ".join(f"{r:,.0f}" for r in runs) + ")")
    finally:
        if cluster is not None:
            cluster.stop()
    for rate in (args.rate,) if args.rate else ():
        runs = [lag(rate) for _ in range(args.runs)]
        p50 = statistics.median(r[0] for r in runs)
        p95 = statistics.median(r[1] for r in runs)
        print(f"lag at {rate} frames/s ({rate * len(BODY)} readings/s) to a webhook:"
              f" p50 {p50:.2f} s, p95 {p95:.2f} s (runs p95: "
              + " / ".join(f"{r[1]:.2f}" for r in runs) + f"; {runs[0][2]} readings each)")


if __name__ == "__main__":
    main()
