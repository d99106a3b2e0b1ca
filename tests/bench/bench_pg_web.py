"""Web UI server time and retention on PostgreSQL beside SQLite, on the same 10,000 nodes and
10 million readings, in one run.

Run: .venv/bin/python tests/bench/bench_pg_web.py [--print-only] [--rebuild]
The SQLite database is bench_ui.py's (cached in build/bench_ui/). A throwaway PostgreSQL 15
cluster (tests/pgcluster.py, durable defaults) gets a migrated database with a day partition of
readings for each of the 7 days, and the SQLite data is moved in with `fleet db copy`'s
copy_store() (COPY, then every table's row count and checksum compared). Then each page is timed
through the Flask app in this process on both stores, alternating page by page, and retention
(drop the oldest of 7 days) is timed on both while a writer inserts a row every 10 ms. Prints a
markdown section that (unless --print-only) goes into docs/benchmarks.md under HEADING.
"""

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


def app_for(target, data_dir: Path):
    from fleet import create_app
    from fleet.settings import Settings

    url = str(target) if str(target).startswith("postgresql") else None
    settings = Settings(data_dir=data_dir, port=8000, mqtt_port=1, mqtt_url=None,
                        database_url=url)
    app = create_app({"SETTINGS": settings, "DATABASE": str(target), "SECRET_KEY": "bench",
                      "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "bench", "password": bench_ui.PASSWORD})
    assert r.status_code == 302
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
            "process (server time; no network), the two stores alternating page by page, on the "
            "same 2-core machine as the PostgreSQL server. Milliseconds; target p95 ≤ 50 ms.",
            "",
            "| page | SQLite p50 | SQLite p95 | PostgreSQL p50 | PostgreSQL p95 |",
            "|---|---|---|---|---|",
        ]
        for name, page in bench_ui.pages("node-00042"):
            got = {}
            for store, client in clients.items():
                p50, p95, _size = bench_ui.measure(client, page)
                got[store] = (p50, p95)
            cells = [f"{got[s][0]:.1f} | {got[s][1]:.1f}{'' if got[s][1] <= 50 else ' ⚠'}"
                     for s in ("SQLite", "PostgreSQL")]
            lines.append(f"| {name} | {' | '.join(cells)} |")

        # Retention: on copies, so the bench database keeps its 7 days.
        work = Path(tempfile.mkdtemp(dir=bench_ui.CACHE))
        try:
            copy = work / "prune.db"
            shutil.copy(path, copy)
            before = time.time() - 6 * DAY
            lite = bench_ui.prune_timed(copy, before)
        finally:
            shutil.rmtree(work)
        # PostgreSQL in two steps: up to the UTC midnight before the cutoff only whole day
        # partitions go (DROP TABLE); then the cutoff's own day, row by row, as prune_old does.
        midnight = before // DAY * DAY
        pg_days = bench_ui.prune_timed(url, midnight)
        pg_rest = bench_ui.prune_timed(url, before)
        lines += [
            "",
            "Retention, oldest of the 7 days (`READINGS_DAYS=6`, as `fleet upkeep` runs it), "
            "while another connection inserts a row every 10 ms:",
            "",
            "| store | readings removed | took | rows/s | writer's longest wait | writer median |",
            "|---|---|---|---|---|---|",
        ]
        for store, (deleted, took, waits) in (
                ("SQLite: delete row by row, up to the cutoff", lite),
                ("PostgreSQL: drop the whole days before the cutoff (DROP TABLE of day "
                 "partitions)", pg_days),
                ("PostgreSQL: then the cutoff's own day up to the cutoff, row by row", pg_rest)):
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
