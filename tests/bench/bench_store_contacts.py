"""A batch's node contacts on PostgreSQL as one UPDATE per node or as one UPDATE from arrays
(telemetry.PG_CONTACTS_AS_ARRAYS), side by side in one process on one store.

Run: .venv/bin/python tests/bench/bench_store_contacts.py [--nodes 100,10000] [--batch 2000]
     [--batches 60]

No broker and no second worker: store_batch alone, on a throwaway PostgreSQL 15 cluster with
durable defaults, its nodes known before. Each batch holds `--batch` TELEMETRY frames (3 readings)
of nodes drawn at random, so over 100 nodes a batch touches each of them and over 10,000 nearly
a node per frame. The two ways alternate batch by batch (ABBA), so a noisy machine weighs on both
alike. Reported: the medians over the batches of this process's CPU (process_time) and of its
PostgreSQL backend's (utime + stime from /proc, in clock ticks, summed over the batches), in µs
a message.
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

from polylink import proto  # noqa: E402

from fleet.store import telemetry as telemetry_store  # noqa: E402
from fleet.store.base import transaction  # noqa: E402
from fleet.store.migrate import open_db  # noqa: E402
from fleet.store.telemetry import Batch  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
READING = [(0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71)]
WAYS = {True: "one UPDATE from arrays", False: "one UPDATE per node"}


def backend_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measure(url: str, nodes: int, batch_size: int, batches: int) -> dict:
    """{arrays?: (client µs a message, backend µs a message)} over `batches` batches."""
    db = open_db(url)
    names = [f"node-{i:05d}" for i in range(nodes)]
    with transaction(db) as conn:
        conn.executemany("INSERT INTO nodes (id, provider, created) VALUES (?, 'mqtt', 0)",
                         [(n,) for n in names])
    pid = db.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    seqs = dict.fromkeys(names, 0)
    rng = random.Random(1)
    client = {True: [], False: []}
    server = {True: 0, False: 0}
    try:
        for i in range(batches):
            for arrays in (True, False) if i % 2 else (False, True):
                batch = Batch()
                for _ in range(batch_size):
                    node = rng.choice(names)
                    seqs[node] += 1
                    at = 1_800_000_000.0 + seqs[node]
                    batch.frames.append((node, seqs[node], proto.TELEMETRY, at, None, "mqtt",
                                         READING))
                    batch.touch[node] = (at, "mqtt", seqs[node])
                telemetry_store.PG_CONTACTS_AS_ARRAYS = arrays
                ticks, t0 = backend_ticks(pid), time.process_time()
                telemetry_store.store_batch(db, batch, proto.TELEMETRY, proto.STATUS,
                                            proto.EVENT, proto.RESULT, proto.OTA_UP)
                client[arrays].append(time.process_time() - t0)
                server[arrays] += backend_ticks(pid) - ticks
    finally:
        telemetry_store.PG_CONTACTS_AS_ARRAYS = True
        db.conn.close()
    return {arrays: (statistics.median(client[arrays]) / batch_size * 1e6,
                     server[arrays] / TICKS / (batches * batch_size) * 1e6)
            for arrays in WAYS}


def main() -> None:
    from pgcluster import PgCluster

    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="100,10000")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=60)
    args = ap.parse_args()
    cluster = PgCluster(durable=True).start()
    try:
        print(f"{args.batches} batches of {args.batch} frames each way, alternating; µs a message")
        print("| nodes | contacts | worker (median) | PostgreSQL backend (mean) |")
        print("|---:|---|---:|---:|")
        for n, nodes in enumerate(int(v) for v in args.nodes.split(",")):
            cluster.sql(f"CREATE DATABASE contacts{n}")
            got = measure(cluster.url(f"contacts{n}"), nodes, args.batch, args.batches)
            for arrays, (worker, backend) in got.items():
                print(f"| {nodes:,} | {WAYS[arrays]} | {worker:.1f} | {backend:.1f} |", flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
