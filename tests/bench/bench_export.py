"""Bulk export throughput and memory: readings/s as CSV and SenML, and peak memory against size.

Run: .venv/bin/python tests/bench/bench_export.py [--print-only] [--readings N]
Builds a throwaway database (100 nodes, three quantities, N readings, default 1,000,000), then
times the export the API, the CLI and the node list use (fleet.nodes.export.stream over the
store's keyset batches; medians of 3 runs) beside the same text built from one fetchall() of the
whole result. Peak Python memory (tracemalloc) is measured for
both on the whole set and on a tenth of it: the streamed export's peak must not grow with the
size of the result. Prints a markdown section that (unless --print-only) replaces "## Bulk export"
in docs/benchmarks.md.
"""

import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Bulk export"
NODES = 100
QIDS = (0, 1, 2)
RUNS = 3


def build(path: Path, readings: int) -> list[str]:
    from fleet.store.migrate import open_db

    open_db(path).conn.close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(16)
    ids = [f"node-{i:04d}" for i in range(NODES)]
    per_series = readings // (NODES * len(QIDS))
    t0 = 1_780_000_000.0
    conn.execute("BEGIN")
    for node in ids:
        conn.execute("INSERT INTO nodes (id, created, provider) VALUES (?, ?, 'mqtt')",
                     (node, t0))
        for qid in QIDS:
            conn.executemany("INSERT INTO readings (node_id, t, qid, inst, value) VALUES"
                             " (?, ?, ?, 0, ?)",
                             ((node, t0 + 60 * i, qid, round(rnd.uniform(0, 40), 2))
                              for i in range(per_series)))
            conn.execute("INSERT INTO latest (node_id, qid, inst, t, value) VALUES"
                         " (?, ?, 0, ?, 1)", (node, qid, t0 + 60 * per_series))
    conn.execute("COMMIT")
    conn.close()
    return ids


def streamed(db, ids, fmt):
    from fleet.nodes import export

    size = 0
    for chunk in export.stream(db, ids, None, None, fmt):
        size += len(chunk)
    return None, size


def naive(db, ids, fmt):
    """The same rows and text, but the whole result read with one fetchall() and the whole
    answer built in memory: what the streamed export must match for speed."""
    from fleet.nodes import export

    rows = db.conn.execute(
        "SELECT node_id, t, qid, inst, value FROM readings WHERE node_id IN "
        f"({','.join('?' * len(ids))}) ORDER BY node_id, qid, t", ids).fetchall()
    chunks = export.csv_chunks(rows) if fmt == "csv" else export.senml_chunks(rows)
    text = "".join(chunks)
    return len(rows), len(text)


def timed(fn, db, ids, fmt) -> tuple[float, int]:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn(db, ids, fmt)
        times.append(time.perf_counter() - start)
    rows = db.conn.execute("SELECT count(*) FROM readings WHERE node_id IN "
                           f"({','.join('?' * len(ids))})", ids).fetchone()[0]
    return statistics.median(times), rows


def peak(fn, db, ids, fmt) -> float:
    tracemalloc.start()
    fn(db, ids, fmt)
    _now, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 1e6


def main() -> None:
    from fleet.store.base import connect

    readings = 1_000_000
    if "--readings" in sys.argv:
        readings = int(sys.argv[sys.argv.index("--readings") + 1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.db"
        ids = build(path, readings)
        db = connect(path)
        results = {}
        for name, fn, fmt in (("streamed, CSV", streamed, "csv"),
                              ("in memory, CSV", naive, "csv"),
                              ("streamed, SenML JSON", streamed, "senml"),
                              ("in memory, SenML JSON", naive, "senml")):
            seconds, rows = timed(fn, db, ids, fmt)
            results[name] = (rows / seconds, peak(fn, db, ids, fmt),
                             peak(fn, db, ids[:NODES // 10], fmt), rows)
        db.conn.close()
    base = {"CSV": results["in memory, CSV"][0],
            "SenML JSON": results["in memory, SenML JSON"][0]}
    load = os.getloadavg()[0]
    lines = [HEADING, "",
             f"`.venv/bin/python tests/bench/bench_export.py` — {NODES} nodes, "
             f"{results['streamed, CSV'][3]:,} readings (3 quantities), SQLite, the export of "
             "`GET /api/v1/export`, `fleet node export` and the node list's download "
             "(`fleet.nodes.export.stream`: keyset batches of 2,000, one chunk at a time) in one "
             "process without HTTP, beside the same text built from one fetchall() of the whole "
             f"result; medians of {RUNS} runs, 2-core machine shared with other "
             f"work (load average {load:.1f} at the end). Peak: Python heap (tracemalloc) for all "
             f"{NODES} nodes and for a tenth of them: the streamed export's peak does not grow "
             "with the result, the one built in memory does.", "",
             "| export | readings/s | vs in memory | peak MB, all | peak MB, a tenth |",
             "|---|---:|---:|---:|---:|"]
    for name, (rate, top, tenth, _rows) in results.items():
        ratio = rate / base[name.split(", ")[1]]
        lines.append(f"| {name} | {rate:,.0f} | {ratio:.2f}x | {top:.1f} | {tenth:.1f} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if "--print-only" not in sys.argv:
        text = DOC.read_text()
        if HEADING in text:
            start = text.index(HEADING)
            end = text.find("\n## ", start + len(HEADING))
            text = text[:start] + section + (text[end + 1:] if end != -1 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        DOC.write_text(text)


if __name__ == "__main__":
    main()
