"""Where an ingest batch's time goes on PostgreSQL beside SQLite: decoding vs storing, per batch
size, and what the PostgreSQL commit's flush (synchronous_commit) costs.

Run: .venv/bin/python tests/bench/bench_store_batch.py [--messages 20000] [--runs 3]

No broker: the real Ingest class decodes TELEMETRY frames (3 readings each, 100 nodes) and
store_batch writes them, in one process, so this is the store's share of `fleet ingest`'s time.
PostgreSQL is a throwaway cluster with durable defaults (tests/pgcluster.py); each row names the
statements one batch sends. `synchronous_commit=off` is measured only to show what the WAL flush
at commit costs; the fleet keeps it on, because an acked message must survive a server crash.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

from polylink import proto  # noqa: E402

NODES = 100
READING = [(0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71)]


def frames(n: int) -> list[tuple[str, bytes]]:
    out = []
    buf = bytearray(64)
    for i in range(n):
        size = proto.encode(buf, proto.TELEMETRY, (i // NODES) & 0xFFFF, READING)
        out.append((f"pl/v1/node-{i % NODES}/up", bytes(buf[:size])))
    return out


def run_once(target, messages, batch: int, sync_off: bool, pipeline=True) -> tuple[float, float]:
    """(msg/s overall, share of the time in store_batch) for one fresh store."""
    from fleet.ingest import Ingest
    from fleet.store import telemetry as telemetry_store
    from fleet.store.migrate import open_db

    telemetry_store.PG_PIPELINE = pipeline
    db = open_db(target)
    telemetry_store.tune_for_bulk_writes(db)
    if sync_off:
        db.conn.execute("SET synchronous_commit = off")
    ingest = Ingest(db)
    stored = 0.0
    t0 = time.perf_counter()
    for i, (topic, payload) in enumerate(messages, 1):
        ingest.add(topic, payload, 1.8e9 + i * 0.001)
        if i % batch == 0:
            s0 = time.perf_counter()
            ingest.flush()
            stored += time.perf_counter() - s0
    s0 = time.perf_counter()
    ingest.flush()
    stored += time.perf_counter() - s0
    took = time.perf_counter() - t0
    assert telemetry_store.count_frames(db) == len(messages)  # nothing lost, nothing twice
    db.conn.close()
    return len(messages) / took, stored / took


def main():
    from pgcluster import PgCluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    messages = frames(args.messages)
    cluster = PgCluster(durable=True).start()
    results: dict = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                for batch in (50, 500, 5000):
                    configs = [("SQLite (WAL, synchronous=NORMAL)", False, True),
                               ("PostgreSQL, a round trip per statement (before)", False, False),
                               ("PostgreSQL, pipeline mode (now)", False, True),
                               ("PostgreSQL, pipeline, synchronous_commit off (not used)", True,
                                True)]
                    for i, (name, sync_off, pipeline) in enumerate(configs):
                        if name.startswith("SQLite"):
                            target = Path(tmp) / f"r{run}-{batch}.db"
                        else:
                            db_name = f"r{run}_{batch}_{i}"
                            cluster.sql(f"CREATE DATABASE {db_name}")
                            target = cluster.url(db_name)
                        rate, share = run_once(target, messages, batch, sync_off, pipeline)
                        results.setdefault((name, batch), []).append((rate, share))
    finally:
        cluster.stop()
    print(f"{args.messages:,} TELEMETRY frames (3 readings) over {NODES} nodes; medians of "
          f"{args.runs} runs; msg/s through Ingest.add + flush in one process, and the share of "
          "that time spent in store_batch\n")
    print("| store | batch 50 | batch 500 | batch 5,000 |")
    print("|---|---|---|---|")
    for name in dict.fromkeys(n for n, _ in results):
        cells = []
        for batch in (50, 500, 5000):
            got = results[(name, batch)]
            rate = statistics.median(r for r, _ in got)
            share = statistics.median(s for _, s in got)
            cells.append(f"{rate:,.0f} ({share:.0%} storing)")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
