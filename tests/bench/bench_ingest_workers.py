"""Ingest with 1, 2 and 4 workers on a shared subscription, on SQLite and on PostgreSQL, beside
the same broker's raw delivery to mosquitto_sub (the C client: the ceiling) and to paho.

Run: .venv/bin/python tests/bench/bench_ingest_workers.py [--messages 50000] [--runs 3]
     [--baseline CHECKOUT]  (the PostgreSQL rows again with an older checkout, same runs)

Backlog mode (the workers' capacity): for each consumer, its persistent session is made, the
consumer goes away, a publisher process queues N QoS-1 frames (9 bytes, 3 readings each, over
--nodes nodes), and the consumer comes back; the time runs from its connection (ingest: the first
worker's "connected to" line; a worker's start-up is not part of its rate) until the last frame is
stored (ingest: the store's own frames_stored counter, polled every 10 ms; then every frame and
reading is counted, so a loss or a duplicate fails the benchmark) or received (raw). K workers
are `fleet ingest --share G --client-id G-i` (a group G per configuration), MQTT 3.1.1 (mosquitto
takes shared subscriptions from 3.1.1 clients too; 5 costs paho ~2x CPU).
PostgreSQL is a throwaway cluster (tests/pgcluster.py) with the durability the fleet needs
(synchronous_commit on, fsync on), SQLite the file in WAL mode as `fleet run` uses it.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

from bench_ingest import free_port, publish_all, raw_backlog  # noqa: E402

from fleet.broker.server import MosquittoBroker  # noqa: E402
from fleet.store.base import connect  # noqa: E402

TOPIC = "pl/v1/+/up"


def csub_backlog(port: int, n: int, nodes: int) -> float:
    """mosquitto_sub (C) draining n queued QoS-1 frames from its persistent session."""
    base = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-i", "bench-csub", "-c",
            "-q", "1", "-t", TOPIC]
    subprocess.run(base + ["-E"], check=True, timeout=30)  # make the session, then leave
    publish_all(port, n, nodes)
    started = time.time()
    subprocess.run(base + ["-C", str(n)], check=True, timeout=600, stdout=subprocess.DEVNULL)
    return n / (time.time() - started)


class Workers:
    """K `fleet ingest` processes on one shared subscription and one store."""

    def __init__(self, port: int, k: int, data_dir: Path, database_url: str | None, name: str,
                 tree: Path = ROOT):
        self.env = dict(os.environ, DATA_DIR=str(data_dir), MQTT_PORT=str(port))
        self.env.pop("MQTT_URL", None)
        self.env.pop("DATABASE_URL", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.target = database_url or data_dir / "fleet.db"
        # Its own group and client ids: the sessions of an earlier configuration stay on the
        # broker, and a group member that is away still gets its share of new messages.
        self.k, self.data_dir, self.procs, self.name = k, data_dir, [], name
        self.tree = tree  # the checkout whose `fleet ingest` runs (--baseline: an older one)

    def start(self) -> float:
        started = time.time()
        self.logs = [open(self.data_dir / f"ingest-{i}.log", "wb")  # noqa: SIM115
                     for i in range(self.k)]
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "ingest", "--share", self.name,
             "--client-id", f"{self.name}-{i}"], env=self.env, cwd=self.tree, stdout=log,
            stderr=subprocess.STDOUT) for i, log in enumerate(self.logs)]
        return started

    def subscribed(self):
        deadline = time.time() + 120
        for i in range(self.k):
            path = self.data_dir / f"ingest-{i}.log"
            while b"connected to" not in path.read_bytes():
                if time.time() > deadline:
                    raise SystemExit(f"worker {i} never connected: {path.read_text()}")
                time.sleep(0.05)
        time.sleep(1.0)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(60)
        for log in self.logs:
            log.close()

    def first_connect(self) -> float:
        """The time the first worker had its session back (it drains the backlog from then on).

        The clock starts here, not at the processes' start: a worker's imports and connection take
        ~0.4 s of one core, which a long-running worker pays once, and which in a run of ~1 s
        would be a third of the figure (the raw consumers above pay none).
        """
        deadline = time.time() + 120
        paths = [self.data_dir / f"ingest-{i}.log" for i in range(self.k)]
        while not any(b"connected to" in path.read_bytes() for path in paths):
            if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                raise SystemExit("no worker connected: " + paths[0].read_text())
            time.sleep(0.002)
        return time.time()

    def wait(self, started: float, n: int) -> float:
        db = connect(self.target)
        try:
            stored, deadline = 0, time.time() + 900
            while stored < n and time.time() < deadline:
                # The ingest's own running total: one row to read every 10 ms, where counting
                # the frames would load the database the workers write to.
                time.sleep(0.01)
                stored = db.conn.execute("SELECT coalesce(sum(value), 0) FROM ingest_counters"
                                         " WHERE name = 'frames_stored'").fetchone()[0]
            finished = time.time()
            stored = db.conn.execute("SELECT count(*) FROM frames").fetchone()[0]
            readings = db.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        finally:
            db.conn.close()
        if stored != n or readings != 3 * n:
            raise SystemExit(f"{self.k} workers stored {stored} frames, {readings} readings of {n}")
        return n / (finished - started)


def ingest_backlog(port, n, nodes, k, data_dir: Path, database_url, tree: Path = ROOT,
                   during=nullcontext, prepare=None) -> float:
    """The drain's rate; `during()` is a context entered for the drain alone (from the first
    worker's connection until the last frame is stored), for what else a bench measures;
    `prepare(store)` (a path or URL) runs on the migrated store before the frames are sent."""
    data_dir.mkdir(parents=True)
    workers = Workers(port, k, data_dir, database_url, data_dir.name, tree)
    workers.start()  # the sessions and their shared subscription; then away, so the broker queues
    workers.subscribed()
    workers.stop()
    if prepare is not None:
        prepare(workers.target)
    publish_all(port, n, nodes)
    workers.start()
    try:
        started = workers.first_connect()
        with during():
            return workers.wait(started, n)
    finally:
        workers.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="also run the PostgreSQL rows with another checkout's `fleet ingest`"
                         " (a git worktree of the commit before a change), in the same runs")
    args = ap.parse_args()
    from pgcluster import PgCluster

    n, nodes, ks = args.messages, args.nodes, [int(k) for k in args.workers.split(",")]
    # durable: fsync, synchronous_commit and full pages on, as the fleet's own server would run.
    cluster = PgCluster(durable=True).start()
    backends = [("sqlite", ROOT), ("postgresql", ROOT)]
    if args.baseline:
        backends.append(("postgresql baseline", args.baseline.resolve()))
    keys = ["mosquitto_sub (C)", "paho"] + [f"{b} x{k}" for b, _tree in backends for k in ks]
    results: dict[str, list[float]] = {k: [] for k in keys}
    try:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                broker = MosquittoBroker(free_port(), tmp / "broker").start()
                try:
                    results["mosquitto_sub (C)"].append(csub_backlog(broker.port, n, nodes))
                    results["paho"].append(raw_backlog(broker.port, n, nodes))
                    for b, (backend, tree) in enumerate(backends):
                        for k in ks:
                            url = None
                            if backend != "sqlite":
                                cluster.sql(f"CREATE DATABASE bench_{run}_{b}_{k}")
                                url = cluster.url(f"bench_{run}_{b}_{k}")
                            results[f"{backend} x{k}"].append(ingest_backlog(
                                broker.port, n, nodes, k, tmp / f"{b}-{k}", url, tree))
                finally:
                    broker.stop()
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items())
                  + " msg/s", flush=True)
    finally:
        cluster.stop()
    print(f"\nmedians of {args.runs} runs, backlog of {n:,} QoS-1 frames over {nodes} nodes,"
          " msg/s (runs):")
    sqlite1 = statistics.median(results["sqlite x1"]) if "sqlite x1" in results else None
    for key, values in results.items():
        med = statistics.median(values)
        ratio = f" ({med / sqlite1:.2f}x SQLite x1)" if sqlite1 and "x" in key[-3:] else ""
        print(f"| {key} | {med:,.0f}{ratio} | " + " / ".join(f"{v:,.0f}" for v in values) + " |")


if __name__ == "__main__":
    main()
