"""Web UI server time and retention on PostgreSQL beside SQLite, on the same 10,000 nodes and
10 million readings, in one run.

Run: .venv/bin/python tests/bench/bench_pg_web.py [--print-only] [--rebuild]
The SQLite database is bench_ui.py's (cached in build/bench_ui/). A throwaway PostgreSQL 15
cluster (tests/pgcluster.py, durable defaults) gets a migrated database with a day partition of
readings for each of the 7 days, and the SQLite data is moved in with `fleet db copy`'s
copy_store() (COPY, then every table's row count and checksum compared). Then each page is timed
through the Flask app in this process on both stores, in turns, ROUNDS times (the medians of the
rounds' p50 and p95 are reported), and retention (READINGS_DAYS=6 of 7 days: SQLite deletes up
to the cutoff, PostgreSQL drops the days before its midnight) is timed on both while a writer
inserts a reading every 10 ms. Prints a markdown section that (unless --print-only) goes into
docs/benchmarks.md under HEADING.
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))
sys.path.append(str(ROOT / "tests" / "bench"))

import bench_ui  # noqa: E402

HEADING = "## Web UI and retention on PostgreSQL beside SQLite (issue 15)"
DAY = 86400
ROUNDS = 3  # each page's p50 and p95: the median of this many rounds, the stores in turn


def load_postgresql(cluster, sqlite_path: Path) -> tuple[str, float]:
    """A PostgreSQL copy of the bench database; its URL and the seconds the copy took."""
    from fleet.store import upkeep as upkeep_store
    from fleet.store.base import connect
    from fleet.store.copy import copy_store
    from fleet.store.migrate import open_db

    cluster.sql("CREATE DATABASE bench")
    url = cluster.url("bench")
    target = open_db(url)
    source = connect(sqlite_path)
    first = source.conn.execute("SELECT min(t) FROM readings").fetchone()[0]
    # Day partitions for every day the readings span (an ingest makes them as days come).
    days = int((time.time() - first) // DAY) + 2
    upkeep_store.add_partitions(target, first - DAY, ahead=days)
    t0 = time.perf_counter()
    copy_store(source, target)
    took = time.perf_counter() - t0
    target.conn.execute("ANALYZE")
    source.conn.close()
    target.conn.close()
    return url, took


def _count_older(url: str, before: float) -> int:
    """Readings older than `before` (what retention should remove), counted exactly."""
    from fleet.store.base import connect

    db = connect(url)
    try:
        return db.conn.execute("SELECT count(*) FROM readings WHERE t < ?", (before,)).fetchone()[0]
    finally:
        db.conn.close()


def app_for(target, data_dir: Path, user: str = "bench"):
    """A test client of the app on target (a SQLite file or a PostgreSQL URL), logged in as user."""
    from fleet import create_app
    from fleet.settings import Settings

    url = str(target) if str(target).startswith("postgresql") else None
    settings = Settings(data_dir=data_dir, port=8000, mqtt_port=1, mqtt_url=None,
                        database_url=url)
    app = create_app({"SETTINGS": settings, "DATABASE": str(target), "SECRET_KEY": "bench",
                      "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    r = client.post("/auth/login", data={"username": user, "password": bench_ui.PASSWORD})
    assert r.status_code == 302, (user, r.status_code)
    return client


def report() -> str:
    import shutil
    import tempfile

    from pgcluster import PgCluster

    from fleet.store import users as user_store
    from fleet.store.base import connect
    from fleet.web import auth

    path, _age = bench_ui.database()
    db = connect(path)
    if user_store.get_user(db, "bench") is None:
        auth.create_user(db, "bench", bench_ui.PASSWORD, "operator")
    rows = db.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    db.conn.close()
    cluster = PgCluster(durable=True).start()
    try:
        url, copy_s = load_postgresql(cluster, path)
        clients = {"SQLite": app_for(path, path.parent), "PostgreSQL": app_for(url, path.parent)}
        lines = [
            HEADING, "",
            f"`.venv/bin/python tests/bench/bench_pg_web.py`: bench_ui.py's database (10,000 "
            f"nodes, {rows:,} readings over 7 days) on SQLite, and the same rows moved into a "
            f"throwaway PostgreSQL 15 (durable defaults, day partitions of readings) with `fleet "
            f"db copy`'s COPY in {copy_s:.0f} s (counts and checksums compared). "
            f"{bench_ui.RUNS} requests per page after 5 warm-up ones through the Flask app in one "
            f"process (server time; no network), the two stores taking turns, {ROUNDS} rounds of "
            "each page: the medians of the rounds' p50 and p95. The same 2-core machine as the "
            f"PostgreSQL server (load average {os.getloadavg()[0]:.1f} at the start). "
            "Milliseconds; target p95 ≤ 50 ms.",
            "",
            "| page | SQLite p50 | SQLite p95 | PostgreSQL p50 | PostgreSQL p95 |",
            "|---|---|---|---|---|",
        ]
        for name, page in bench_ui.pages("node-00042"):
            runs = {store: [] for store in clients}
            for _round in range(ROUNDS):
                for store, client in clients.items():
                    p50, p95, _size = bench_ui.measure(client, page)
                    runs[store].append((p50, p95))
            got = {store: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
                   for store, rs in runs.items()}
            cells = [f"{got[s][0]:.1f} | {got[s][1]:.1f}{'' if got[s][1] <= 50 else ' ⚠'}"
                     for s in ("SQLite", "PostgreSQL")]
            lines.append(f"| {name} | {' | '.join(cells)} |")

        # Retention: on copies, so the bench database keeps its 7 days.
        work = Path(tempfile.mkdtemp(dir=bench_ui.CACHE))
        try:
            copy = work / "prune.db"
            shutil.copy(path, copy)
            before = time.time() - 6 * DAY
            lite = bench_ui.prune_timed(copy, before, write_readings=True)
        finally:
            shutil.rmtree(work)
        # PostgreSQL rounds the cutoff down to its UTC midnight and drops the day partitions
        # before it (store/upkeep.py: prune_old); the cutoff's own day is kept whole.
        exact = _count_older(url, before // DAY * DAY)
        pg = bench_ui.prune_timed(url, before, write_readings=True)
        # The next day's pass: the cutoff's day, now whole days old, goes as one partition.
        next_exact = _count_older(url, before // DAY * DAY + DAY)
        pg_next = bench_ui.prune_timed(url, before + DAY, write_readings=True)
        lines += [
            "",
            "Retention, oldest of the 7 days (`READINGS_DAYS=6`, as `fleet upkeep` runs it: "
            "`prune_old(db, \"readings\", now - 6 days)`), while another connection inserts a "
            "reading every 10 ms:",
            "",
            "| store | readings removed | took | rows/s | writer's longest wait | writer median |",
            "|---|---|---|---|---|---|",
        ]
        for store, (deleted, took, waits) in (
                ("SQLite: delete row by row, up to the cutoff", lite),
                ("PostgreSQL: drop the day partitions before the cutoff's UTC midnight (the "
                 f"cutoff's day kept; rows as estimated, exactly {exact:,})", pg),
                ("PostgreSQL, the next day's pass: that whole day's partition (rows as "
                 f"estimated, exactly {next_exact:,})", pg_next)):
            rate = deleted / max(took, 1e-9)
            lines.append(f"| {store} | {deleted:,} | {took:.2f} s | {rate:,.0f} | "
                         f"{waits[-1]:.0f} ms | {statistics.median(waits):.1f} ms |")
        return "\n".join(lines) + "\n"
    finally:
        cluster.stop()


if __name__ == "__main__":
    section = report()
    print(section)
    if "--print-only" not in sys.argv[1:]:
        bench_ui.update_doc(section, HEADING)
        print("updated docs/benchmarks.md")
