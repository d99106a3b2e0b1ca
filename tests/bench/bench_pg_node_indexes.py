"""What migration 0039 costs the web on PostgreSQL: the node list and overview pages with the
indexes it dropped (so that a node's contact is a HOT update) and without them, side by side.

Run: .venv/bin/python tests/bench/bench_pg_node_indexes.py [--rounds 5]
bench_pg_web.py's PostgreSQL copy of bench_ui.py's database (10,000 nodes, 10 M readings). Each
round times every page with the schema as migrated (no index holds last_seen, battery or online),
then with the three indexes of migration 0038's schema created again, then drops them: the two
take turns round by round on the same cluster. Prints a markdown table of the medians of the
rounds' p50 and p95, in milliseconds.
"""

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))
sys.path.append(str(ROOT / "tests" / "bench"))

import bench_pg_web  # noqa: E402
import bench_ui  # noqa: E402

# The indexes of nodes that migration 0039 (postgresql twin) dropped, as 0035 and 0014 made them.
BEFORE_0039 = (
    "CREATE INDEX nodes_last_seen ON nodes (last_seen, id)",
    "CREATE INDEX nodes_battery ON nodes (battery, id)",
    "CREATE INDEX nodes_overview ON nodes (provider, board, firmware_version,"
    " micropython_version, online, last_seen, interval, id)",
)
NAMES = ("nodes_last_seen", "nodes_battery", "nodes_overview")
# The pages whose queries read those columns of many nodes.
PAGES = ("overview", "node list, first page",
         "node list, filtered (online, ttn) and sorted by last seen desc",
         "node list, alerting, sorted by battery", "node list, page 100 sorted by battery",
         "alerts")


def main() -> None:
    from pgcluster import PgCluster

    from fleet.store import users as user_store
    from fleet.store.base import connect
    from fleet.web import auth

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    path, _age = bench_ui.database()
    db = connect(path)
    if user_store.get_user(db, "bench") is None:
        auth.create_user(db, "bench", bench_ui.PASSWORD, "operator")
    db.conn.close()
    cluster = PgCluster(durable=True).start()
    try:
        url, copy_s = bench_pg_web.load_postgresql(cluster, path)
        print(f"copied in {copy_s:.0f} s", flush=True)
        client = bench_pg_web.app_for(url, path.parent)
        admin = connect(url)
        pages = [(name, page) for name, page in bench_ui.pages("node-00042") if name in PAGES]
        runs = {(name, state): [] for name, _page in pages for state in ("0039", "0038")}
        for round_no in range(args.rounds):
            for state in ("0039", "0038"):
                if state == "0038":
                    for sql in BEFORE_0039:
                        admin.conn.execute(sql)
                    admin.conn.execute("ANALYZE nodes")
                for name, page in pages:
                    p50, p95, _size = bench_ui.measure(client, page)
                    runs[name, state].append((p50, p95))
                if state == "0038":
                    for name in NAMES:
                        admin.conn.execute(f"DROP INDEX {name}")
                    admin.conn.execute("ANALYZE nodes")
            print(f"round {round_no + 1} done", flush=True)
        admin.conn.close()
    finally:
        cluster.stop()
    print(f"\nmedians of {args.rounds} rounds, ms; {bench_ui.RUNS} requests a page\n")
    print("| page | p50, 0039 | p95, 0039 | p50, with 0038's indexes | p95, with 0038's indexes |")
    print("|---|---:|---:|---:|---:|")
    for name, _page in pages:
        cells = []
        for state in ("0039", "0038"):
            rs = runs[name, state]
            cells += [f"{statistics.median(r[0] for r in rs):.1f}",
                      f"{statistics.median(r[1] for r in rs):.1f}"]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
