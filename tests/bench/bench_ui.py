"""Web UI server time with 10,000 nodes and 10 million readings, and the node page's bytes.

Run: .venv/bin/python tests/bench/bench_ui.py [--print-only] [--rebuild]
Builds (once, cached in build/bench_ui/, rebuilt when older than 6 h or the schema changed) a
fleet database: 10,000 nodes over three providers, four boards and five firmware versions; 100
"busy" nodes with a reading of three quantities every minute for 7 days (3.0 M readings) and 9,900
with one every 42 min (7.1 M); STATUS history; positions for half the nodes. Then times each page
through the Flask app in this process (server time: routing, SQL, templates; no network), warm
cache, and prints a markdown section that (unless --print-only) goes into docs/benchmarks.md
under "## Web UI: server time".
"""

import math
import os
import random
import re
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Web UI: server time"
CACHE = ROOT / "build" / "bench_ui"
MAX_AGE = 6 * 3600
DATA_VERSION = 1  # bump when build() changes what it generates
NODES = 10_000
BUSY = 100
DAY = 86400
RUNS = 100
PASSWORD = "bench-password"


def build(path: Path, now: float) -> None:
    from fleet.store.migrate import open_db

    path.parent.mkdir(parents=True, exist_ok=True)
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    open_db(path).conn.close()  # schema, at the current version
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # a throwaway file: no journal while filling it
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    rnd = random.Random(6)
    providers = ["mqtt"] * 6 + ["ttn"] * 3 + ["chirpstack"]
    boards = ["ESP32_GENERIC", "HELTEC_V3", "LILYGO_TBEAM_V1", "LILYGO_T3_S3"]
    firmware = ["0.1.0", "0.2.0", "0.2.1", "0.3.0", "0.3.1"]
    nodes, latest = [], []
    conn.execute("BEGIN")
    for i in range(NODES):
        nid = f"node-{i:05d}"
        offline = i % 20 == 7
        last = now - (rnd.uniform(3 * 3600, 5 * DAY) if offline else rnd.uniform(0, 50))
        battery = round(rnd.uniform(3.3, 4.1), 2)
        lat = 52.45 + rnd.random() * 0.15 if i % 2 == 0 else None
        lon = 13.30 + rnd.random() * 0.25 if i % 2 == 0 else None
        tags = ["busy"] if i < BUSY else [f"district-{i % 12}"]
        nodes.append((nid, f"lamp-{i}", boards[i % 4], providers[i % 10], firmware[i % 5], last,
                      0 if offline else 1, 3600, 1, 90000, -60 - i % 40, 0, 0, 1 + i % 3, 60,
                      last, battery, i, 0, 0, now - 30 * DAY, f'["{tags[0]}"]', lat, lon,
                      f"Street {i % 300}, pole {i}"))
        for qid, value in ((0, 20.0), (1, 50.0), (2, battery)):
            latest.append((nid, qid, 0, last, value))
    conn.executemany(
        "INSERT INTO nodes (id, name, board, provider, firmware_version, last_seen, online,"
        " uptime, reset_cause, heap_free, rssi, queue, dropped, boots, interval, status_at,"
        " battery, up_seq, down_seq, bad_frames, created, tags, lat, lon, location)"
        " VALUES (" + ", ".join("?" * 25) + ")", nodes)
    conn.executemany("INSERT INTO latest VALUES (?, ?, ?, ?, ?)", latest)
    conn.execute("COMMIT")

    def readings():
        # In index order (node, qid, t): the B-tree grows at its end, which is the fast way.
        start = now - 7 * DAY
        for i in range(NODES):
            nid = f"node-{i:05d}"
            step = 60 if i < BUSY else 42 * 60
            n = int(7 * DAY / step)
            for qid, base, amp in ((0, 15.0, 8.0), (1, 55.0, 20.0), (2, 3.9, 0.1)):
                phase = rnd.random() * 6.28
                for k in range(n):
                    t = start + k * step
                    yield nid, t, qid, 0, round(base + amp * math.sin(
                        phase + t / DAY * 6.283) + rnd.uniform(-0.2, 0.2), 2)

    conn.execute("BEGIN")
    conn.executemany("INSERT INTO readings (node_id, t, qid, inst, value) VALUES (?, ?, ?, ?, ?)",
                     readings())
    conn.execute("COMMIT")

    def statuses():
        for i in range(NODES):
            nid = f"node-{i:05d}"
            step = 300 if i < BUSY else 3600
            for k in range(int(7 * DAY / step)):
                yield (nid, now - 7 * DAY + k * step, "0.3.1", k * step, 1, 90000 - k % 500,
                       -60 - (k % 17), k % 4, 0, 1 + i % 3)

    conn.execute("BEGIN")
    conn.executemany("INSERT INTO status_log (node_id, t, firmware_version, uptime,"
                     " reset_cause, heap_free, rssi, queue, dropped, boots)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", statuses())
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    (path.parent / "built_at").write_text(str(now))


def database() -> tuple[Path, float]:
    """The cached bench database (built if missing, stale or forced) and when it was built."""
    from fleet.store.migrate import open_db

    # Named by the generator's version; a newer schema is reached by migrating the cached file.
    path = CACHE / f"fleet-data{DATA_VERSION}.db"
    stamp = CACHE / "built_at"
    now = time.time()
    fresh = path.exists() and stamp.exists() and now - float(stamp.read_text()) < MAX_AGE
    if "--rebuild" in sys.argv[1:] or not fresh:
        t0 = time.perf_counter()
        print(f"building {path.relative_to(ROOT)} ...", flush=True)
        build(path, now)
        print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    built = float(stamp.read_text())
    open_db(path).conn.close()  # migrations added since it was built
    # Keep node times current, so "online" means the same as when it was built.
    conn = sqlite3.connect(str(path), isolation_level=None)
    shift = now - built
    conn.execute("UPDATE nodes SET last_seen = last_seen + ?, status_at = status_at + ?",
                 (shift, shift))
    conn.execute("UPDATE latest SET t = t + ?", (shift,))
    conn.close()
    stamp.write_text(str(now))
    return path, now - built


def pages(busy: str) -> list[tuple[str, str]]:
    """(name, URL) of the pages timed; busy: the node whose pages are timed."""
    return [
        ("overview", "/"),
        ("node list, first page", "/nodes/"),
        ("node list, filtered (online, ttn) and sorted by last seen desc",
         "/nodes/?status=online&provider=ttn&sort=last_seen&dir=desc"),
        ("node list, alerting, sorted by battery", "/nodes/?status=alerting&sort=battery"),
        ("node list, search 'pole 4711' (substring over 10,000)", "/nodes/?q=pole+4711"),
        ("node list, page 100 sorted by battery", "/nodes/?sort=battery&page=100"),
        ("node page (busy node)", f"/nodes/{busy}"),
        ("chart 24 h (busy node, temperature)", f"/nodes/{busy}/chart.svg?q=0&i=0&range=24h"),
        ("chart 7 days (busy node, temperature, 10,080 readings)",
         f"/nodes/{busy}/chart.svg?q=0&i=0&range=7d"),
        ("chart 7 days RSSI from status history", f"/nodes/{busy}/chart.svg?s=rssi&range=7d"),
        ("map (5,000 positions, binned)", "/map"),
        ("alerts", "/alerts/"),
    ]


def measure(client, url: str) -> tuple[float, float, int]:
    for _ in range(5):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        r = client.get(url)
        r.get_data()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], len(r.get_data())


def report() -> str:
    from fleet import create_app
    from fleet.settings import Settings
    from fleet.store import alerts as alert_store
    from fleet.store import users as user_store
    from fleet.store.base import connect
    from fleet.web import auth

    path, age = database()
    db = connect(path)
    rows = db.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    nodes = db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
    t0 = time.perf_counter()
    alert_store.evaluate_alerts(db)
    first_eval = (time.perf_counter() - t0) * 1000
    evals = []
    for _ in range(10):
        t0 = time.perf_counter()
        alert_store.evaluate_alerts(db)
        evals.append((time.perf_counter() - t0) * 1000)
    open_alerts = len(alert_store.list_alerts(db, limit=100000))
    if user_store.get_user(db, "bench") is None:
        auth.create_user(db, "bench", PASSWORD, "operator")
    settings = Settings(data_dir=path.parent, port=8000, mqtt_port=1, mqtt_url=None)
    app = create_app({"SETTINGS": settings, "DATABASE": str(path), "SECRET_KEY": "bench",
                      "WTF_CSRF_ENABLED": False})
    # Alert evaluation is timed on its own above; pages only read what it stored (fleet upkeep).
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "bench", "password": PASSWORD})
    assert r.status_code == 302
    busy = "node-00042"
    timed = pages(busy)
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python tests/bench/bench_ui.py` — {nodes:,} nodes, {rows:,} readings "
        f"(database cached in build/bench_ui/, {age / 3600:.1f} h old), {RUNS} requests each "
        "after 5 warm-up ones, through the Flask app in one process (server time: routing, SQL, "
        "templates; no network, no TLS), warm page cache, 2-core machine shared with other work "
        f"(load average {os.getloadavg()[0]:.1f} at the start). Milliseconds; target p95 ≤ 50 ms.",
        "",
        "| page | p50 (ms) | p95 (ms) | bytes |",
        "|---|---|---|---|",
    ]
    results = {}
    for name, url in timed:
        p50, p95, size = measure(client, url)
        results[url] = size
        mark = "" if p95 <= 50 else " ⚠"
        lines.append(f"| {name} | {p50:.1f} | {p95:.1f}{mark} | {size:,} |")
    lines.append(f"| alert evaluation, all 10,000 nodes ({open_alerts:,} open alerts; `fleet "
                 f"upkeep` runs it every 30 s, outside any request, so it is not in the page "
                 f"figures) | {statistics.median(evals):.1f} | "
                 f"{sorted(evals)[-1]:.1f} (max of 10; the first, cold: {first_eval:.0f}) | - |")
    # First load of the node page: the HTML and everything it pulls in.
    page = client.get(f"/nodes/{busy}").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/(?:static|nodes)/[^"]+)"', page)
    total = len(page.encode())
    # What Chromium receives: it asks for compressed bodies; the HTML is never compressed.
    wire = total
    parts = [f"HTML {len(page.encode()):,}"]
    for url in assets:
        if url.startswith(f"/nodes/{busy}") and ".svg" not in url:
            continue
        size = len(client.get(url.replace("&amp;", "&")).get_data())
        total += size
        wire += len(client.get(url.replace("&amp;", "&"), headers={
            "Accept-Encoding": "gzip, deflate, br, zstd"}).get_data())
    n_charts = sum(1 for u in assets if ".svg" in u)
    parts.append(f"style.css + node.js + {n_charts} charts (24 h) "
                 f"{total - len(page.encode()):,}")
    lines += [
        "",
        f"Node page first load, uncompressed: **{total / 1024:.1f} KB** ({'; '.join(parts)}); "
        f"as Chromium receives it (style, script and charts compressed, the HTML not: it holds "
        f"the CSRF token): **{wire / 1024:.1f} KB**; target ≤ 100 KB. The charts are separate "
        "`<img loading=lazy>` requests, so the first screen needs only the HTML and the CSS.",
    ]
    lines += ["", prune_figures(path)]
    return "\n".join(lines) + "\n"


def prune_figures(path: Path) -> str:
    """Retention on a copy of the bench database: delete the oldest of 7 days of readings
    (READINGS_DAYS=6) while another connection writes a row every 10 ms, as the ingest worker
    would, and report how long the deletion took and the longest that writer waited."""
    import tempfile

    from fleet.store.base import connect

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        copy = Path(tmp) / "prune.db"
        src = sqlite3.connect(str(path))
        dst = sqlite3.connect(str(copy))
        src.backup(dst)
        src.close()
        dst.close()
        db = connect(copy)
        before = db.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        pairs = db.conn.execute("SELECT count(*) FROM (SELECT DISTINCT node_id, qid FROM latest)"
                                ).fetchone()[0]
        db.conn.close()
        deleted, took, waits = prune_timed(copy, time.time() - 6 * DAY)
    return (f"Retention (`READINGS_DAYS`, `fleet upkeep` once an hour), same database, on a copy: "
            f"deleting the oldest day of 7 ({deleted:,} of {before:,} readings, walking the "
            f"{pairs:,} (node, quantity) pairs in transactions of at most 5,000 rows) took "
            f"**{took:.1f} s** ({deleted / took:,.0f} rows/s); a writer inserting a row every "
            f"10 ms meanwhile ({len(waits)} writes) waited at most **{waits[-1]:.0f} ms** "
            f"(median {statistics.median(waits):.1f} ms). A daily pass deletes one day like this; "
            f"an hourly one about a 24th of it.")


def prune_timed(target, before: float, write_readings: bool = False
                ) -> tuple[int, float, list[float]]:
    """Retention up to `before` on target (a SQLite path or a PostgreSQL URL) while another
    connection writes a row every 10 ms, as the ingest worker would (an event, or with
    write_readings a reading of now): (readings deleted, seconds it took, the writer's waits in
    ms, sorted)."""
    import threading

    from fleet.store import upkeep as upkeep_store
    from fleet.store.base import connect, transaction

    db, writer = connect(target), connect(target)
    waits, stop = [], threading.Event()

    def write():
        while not stop.is_set():
            t0 = time.perf_counter()
            with transaction(writer) as conn:
                if write_readings:  # PostgreSQL: the table whose partitions are dropped
                    conn.execute("INSERT INTO readings (node_id, t, qid, inst, value)"
                                 " VALUES ('node-00001', ?, 0, 0, 21.5)", (time.time(),))
                else:
                    conn.execute("INSERT INTO events (node_id, t, received_at, code)"
                                 " VALUES ('node-00001', ?, ?, 1)", (time.time(), time.time()))
            waits.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)

    thread = threading.Thread(target=write)
    thread.start()
    t0 = time.perf_counter()
    deleted = upkeep_store.prune_old(db, "readings", before)
    took = time.perf_counter() - t0
    stop.set()
    thread.join()
    db.conn.close()
    writer.conn.close()
    return deleted, took, sorted(waits)


def update_doc(section, heading: str = HEADING):
    """Put section into docs/benchmarks.md in place of the one under heading (or at the end)."""
    text = DOC.read_text(encoding="utf-8")
    if heading not in text:
        DOC.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
        return
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    end = len(text) if end < 0 else end + 1
    DOC.write_text(text[:start] + section.rstrip("\n") + "\n\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    section = report()
    print(section)
    if "--print-only" not in sys.argv[1:]:
        update_doc(section)
        print(f"updated {DOC.relative_to(ROOT)}")
