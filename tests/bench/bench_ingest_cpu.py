"""Where an ingest drain's CPU goes: µs per message for each kind of process (the workers,
PostgreSQL's backends, mosquitto), beside the drain's rate, configurations alternating round by
round so a noisy machine weighs on all of them alike.

Run: .venv/bin/python tests/bench/bench_ingest_cpu.py [--messages 100000] [--rounds 3]
     [--nodes 100] [--known-nodes] [--configs postgresql:2,sqlite:1] [--baseline CHECKOUT] (its
     postgresql configurations too)

Each drain is bench_ingest_workers.py's backlog mode (the same Workers, the same clock: from the
first worker's connection until the store's frames_stored counter has every frame, then every
frame and reading counted). CPU is utime + stime from /proc/PID/stat of every process on the
machine before and after the drain, grouped by its command line; "other" is everything else
(this script's polling, the kernel's threads, other users of the machine). Where rates are noisy
the CPU per message is the steadier figure: PostgreSQL x2 is bound by all its processes' CPU on
two cores, SQLite x1 by its one worker's.
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

from bench_ingest import free_port  # noqa: E402
from bench_ingest_workers import ingest_backlog  # noqa: E402

from fleet.broker.server import MosquittoBroker  # noqa: E402
from fleet.store.base import connect, transaction  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> dict[tuple[str, str], int]:
    """{(pid, kind): utime + stime} of every process; kind from its command line."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        if "fleet.cli ingest" in cmd:
            kind = "workers"
        elif cmd.startswith("postgres:"):
            kind = "postgresql"  # backends and PostgreSQL's own processes (WAL writer, ...)
        elif "mosquitto" in cmd:
            kind = "mosquitto"
        else:
            kind = "other"
        out[pid, kind] = int(fields[11]) + int(fields[12])
    return out


class CpuUse:
    """cpu_ticks() on entering and on leaving."""

    def __enter__(self):
        self.before = cpu_ticks()
        return self

    def __exit__(self, *exc):
        self.after = cpu_ticks()


def known_nodes(nodes: int):
    """A `prepare` for ingest_backlog: the store already holds every node and its latest values,
    as a running fleet's does, so no frame of the drain is a node's first."""
    def prepare(store):
        db = connect(store)
        try:
            with transaction(db) as conn:
                conn.executemany("INSERT INTO nodes (id, provider, created) VALUES (?, 'mqtt', 0)",
                                 [(f"bench-{i}",) for i in range(nodes)])
                conn.executemany("INSERT INTO latest (node_id, qid, inst, t, value)"
                                 " VALUES (?, ?, 0, 0, 0)",
                                 [(f"bench-{i}", q) for i in range(nodes) for q in range(3)])
        finally:
            db.conn.close()
    return prepare


def drain(backend: str, k: int, n: int, nodes: int, tree: Path, cluster, tag: str,
          prepare=None) -> dict[str, float]:
    """One backlog drain of n frames over `nodes` nodes by k workers of `tree`; its rate and µs
    per message."""
    use = CpuUse()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = MosquittoBroker(free_port(), tmp / "broker").start()
        try:
            url = None
            if backend == "postgresql":
                cluster.sql(f"CREATE DATABASE {tag}")
                url = cluster.url(tag)
            rate = ingest_backlog(broker.port, n, nodes, k, tmp / tag, url, tree,
                                  during=lambda: use, prepare=prepare)
        finally:
            broker.stop()
    figures = {"msg/s": rate}
    for (pid, kind), ticks in use.after.items():
        used = (ticks - use.before.get((pid, kind), 0)) / TICKS * 1e6 / n
        figures[kind] = figures.get(kind, 0.0) + used
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100,
                    help="the frames' nodes: each batch updates every node it holds a frame of")
    ap.add_argument("--known-nodes", action="store_true",
                    help="the store holds every node before the drain (no first contacts)")
    ap.add_argument("--configs", default="postgresql:2,sqlite:1",
                    help="backend:workers, comma-separated")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="also run the postgresql configurations with another checkout")
    args = ap.parse_args()
    from pgcluster import PgCluster

    configs = [(b, int(k), "now", ROOT) for b, k in
               (c.split(":") for c in args.configs.split(","))]
    if args.baseline:
        configs += [(b, k, "baseline", args.baseline.resolve())
                    for b, k, _label, _tree in configs if b == "postgresql"]
    cluster = PgCluster(durable=True).start()  # as bench_ingest_workers.py: fsync and all on
    results: dict[str, list[dict]] = {}
    try:
        for r in range(args.rounds):
            for i, (backend, k, label, tree) in enumerate(configs):
                name = f"{backend} x{k} ({label})"
                got = drain(backend, k, args.messages, args.nodes, tree, cluster, f"cpu_{r}_{i}",
                            known_nodes(args.nodes) if args.known_nodes else None)
                results.setdefault(name, []).append(got)
                print(f"round {r + 1}: {name}: " + ", ".join(
                    f"{key} {v:,.0f}" if key == "msg/s" else f"{key} {v:.1f}"
                    for key, v in got.items()), flush=True)
    finally:
        cluster.stop()
    kinds = ["workers", "postgresql", "mosquitto", "other"]
    print(f"\nmedians of {args.rounds} rounds, {args.messages:,} messages over {args.nodes:,}"
          f" nodes{' known before' if args.known_nodes else ''}; CPU in µs a message")
    print("| configuration | msg/s | " + " | ".join(kinds) + " | all |")
    print("|---|---:|" + "---:|" * (len(kinds) + 1))
    for name, runs in results.items():
        med = {key: statistics.median(run.get(key, 0.0) for run in runs)
               for key in ["msg/s", *kinds]}
        total = statistics.median(sum(run.get(key, 0.0) for key in kinds) for run in runs)
        print(f"| {name} | {med['msg/s']:,.0f} | "
              + " | ".join(f"{med[key]:.1f}" for key in kinds) + f" | {total:.1f} |")


if __name__ == "__main__":
    main()
