"""Web UI server time with 100 organisations over the 10,000-node fleet, beside one organisation
(issue 18: within 10 %), in one run.

Run: .venv/bin/python tests/bench/bench_orgs.py [--print-only] [--rebuild]
The database is bench_ui.py's (10,000 nodes, 10 M readings; cached in build/bench_ui/), copied
twice: one copy stays one organisation holding every node (the fleet as bench_ui measures it);
in the other, 99 organisations are added and the nodes spread over all 100 by number
(node-00042 and its alerts to org-42, ...; every 100th stays the platform's). Each page is timed
as an operator of the one organisation, as an operator of org-42 (its 100 nodes: every query
takes the organisation filter) and as the platform operator of the 100-organisation store
(every node), the three in turn page by page, so the shared machine's load falls on all three
alike. Prints a markdown section that (unless --print-only) goes into docs/benchmarks.md under
HEADING.
"""

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests" / "bench"))

import bench_ui  # noqa: E402

HEADING = "## Web UI with 100 organisations (issue 18)"
ORGS = 100
ROUNDS = 3  # p95 of each user and page: the median of this many rounds, taken in turn
BUSY = "node-00042"


def client_for(path: Path, user: str):
    from fleet import create_app
    from fleet.settings import Settings

    settings = Settings(data_dir=path.parent, port=8000, mqtt_port=1, mqtt_url=None)
    app = create_app({"SETTINGS": settings, "DATABASE": str(path), "SECRET_KEY": "bench",
                      "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    r = client.post("/auth/login", data={"username": user, "password": bench_ui.PASSWORD})
    assert r.status_code == 302, (user, r.status_code)
    return client


def spread(db) -> None:
    """Add organisations 2..100 and give node-N (and its alerts) organisation 1 + N % 100."""
    from fleet.store import orgs

    for k in range(1, ORGS):
        orgs.add_organisation(db, f"org-{k:02d}")
    conn = db.conn
    conn.execute("BEGIN")
    conn.execute("UPDATE nodes SET org_id = (SELECT id FROM organisations WHERE name ="
                 " 'org-' || substr('0' || (CAST(substr(nodes.id, 6) AS INTEGER) % 100), -2))"
                 " WHERE CAST(substr(id, 6) AS INTEGER) % 100 != 0")
    conn.execute("UPDATE alerts SET org_id = (SELECT org_id FROM nodes WHERE nodes.id ="
                 " alerts.node_id)")
    conn.execute("COMMIT")
    got = conn.execute("SELECT count(DISTINCT org_id) FROM nodes").fetchone()[0]
    assert got == ORGS, got


def report() -> str:
    from fleet.store import orgs
    from fleet.store.base import connect
    from fleet.store.scope import EVERYTHING, Scope, set_scope
    from fleet.web import auth

    source, _age = bench_ui.database()
    work = Path(tempfile.mkdtemp(dir=bench_ui.CACHE))
    try:
        solo, path = work / "one.db", work / "orgs.db"
        for copy in (solo, path):
            shutil.copy(source, copy)
            db = connect(copy)
            auth.create_user(db, "platform-op", bench_ui.PASSWORD, "operator")
        one = client_for(solo, "platform-op")
        timed = bench_ui.pages(BUSY)

        spread(db)
        org42 = orgs.get_organisation(db, "org-42")["id"]
        set_scope(db, Scope(org42))
        auth.create_user(db, "org42-op", bench_ui.PASSWORD, "operator")
        set_scope(db, EVERYTHING)
        nodes42 = db.conn.execute("SELECT count(*) FROM nodes WHERE org_id = ?",
                                  (org42,)).fetchone()[0]
        db.conn.close()
        member, platform = client_for(path, "org42-op"), client_for(path, "platform-op")
        lines = [
            HEADING,
            "",
            f"`.venv/bin/python tests/bench/bench_orgs.py` — bench_ui.py's database (10,000 "
            f"nodes, 10 M readings), {bench_ui.RUNS} requests per page after 5 warm-up ones "
            "through the Flask app in one process (server time), milliseconds; each p95 is the "
            f"median of {ROUNDS} rounds, the three users in turn. *One "
            "organisation*: an operator of the organisation holding every node. *100 "
            f"organisations*: the nodes spread over 100 by number; an operator of org-42 "
            f"({nodes42} nodes, every query filtered by organisation), and the platform operator "
            "(every node) on the same store. Ratio: p95 against the one-organisation p95 "
            "(goal ≤ 1.10).",
            "",
            "| page | one org p95 | org-42's operator p95 | ratio | platform operator p95 "
            "| ratio |",
            "|---|---|---|---|---|---|",
        ]
        worst = 0.0
        for name, url in timed:
            p95s = {c: [] for c in (one, member, platform)}
            for _round in range(ROUNDS):
                for client, got in p95s.items():
                    got.append(bench_ui.measure(client, url)[1])
            base, mine, everyone = (statistics.median(p95s[c]) for c in (one, member, platform))
            worst = max(worst, mine / base, everyone / base)
            lines.append(f"| {name} | {base:.1f} | {mine:.1f} | {mine / base:.2f} | "
                         f"{everyone:.1f} | {everyone / base:.2f} |")
        lines += ["", f"Worst ratio: **{worst:.2f}** "
                      f"({'within' if worst <= 1.10 else 'over'} the 10 % goal)."]
        return "\n".join(lines) + "\n"
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    section = report()
    print(section)
    if "--print-only" not in sys.argv[1:]:
        bench_ui.update_doc(section, HEADING)
        print("updated docs/benchmarks.md")
