"""Issue 18 in real Chromium at 360 px: two organisations' technicians, logged in to one running
fleet, each see only their own nodes; a node one organisation shares with the other appears in
the other's list marked shared, and its page offers no form that would change it."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from services import READY, fleet_db

from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store.migrate import open_db
from fleet.store.scope import EVERYTHING, Scope, set_scope
from fleet.web import auth

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"


def test_each_organisations_technician_sees_only_its_nodes_and_shared_ones_read_only(
        fleet_run, tmp_path, artifacts):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it as root "
                    "(tests/system-packages)")
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    db = open_db(fleet_db(tmp_path / "data"))  # the fleet_run fixture's DATA_DIR
    for org, nodes, person in (("parking", ["bay-1", "bay-2"], "pat"),
                               ("environment", ["air-1"], "eve")):
        set_scope(db, EVERYTHING)  # organisations are the platform's to add
        set_scope(db, Scope(orgs.add_organisation(db, org)))
        for node in nodes:
            node_store.enrol_node(db, node)
        auth.create_user(db, person, PASSWORD, "technician")
    set_scope(db, EVERYTHING)
    node_store.enrol_node(db, "city-1")  # the platform operator's own
    orgs.share(db, "parking", "environment", node_id="bay-2", actor="test")
    db.conn.close()

    mine = {"pat": ["/nodes/bay-1", "/nodes/bay-2"], "eve": ["/nodes/air-1", "/nodes/bay-2"]}
    people = [{"user": p, "password": PASSWORD, "pages": ["/nodes/", *paths, "/nodes/city-1",
                                                         "/organisations/"]}
              for p, paths in mine.items()]
    browser = subprocess.run(
        [shutil.which("node") or "node", str(HERE / "orgs.mjs")],
        env=dict(os.environ, BASE=f"http://127.0.0.1:{run.port}", PEOPLE=json.dumps(people),
                 ARTIFACTS=str(artifacts), CHROMIUM=CHROMIUM),
        cwd=HERE, capture_output=True, text=True, timeout=300)
    assert browser.returncode == 0, browser.stdout + browser.stderr + run.output()
    seen = json.loads(browser.stdout.strip().splitlines()[-1])

    for person, paths in mine.items():
        pages = seen[person]
        assert all(p["width"] <= 360 for p in pages.values()), {
            path: p["width"] for path, p in pages.items()}
        assert sorted(set(pages["/nodes/"]["nodes"])) == sorted(paths), person
        assert pages["/nodes/city-1"]["status"] == 404  # the platform's node: not found
    # Pat owns bay-2 and may change it; Eve sees it marked shared, with nothing to change it.
    assert seen["pat"]["/nodes/"]["shared"] == 0
    assert any("/nodes/bay-2/" in a for a in seen["pat"]["/nodes/bay-2"]["posts"])
    assert seen["eve"]["/nodes/"]["shared"] == 1
    assert seen["eve"]["/nodes/bay-2"]["shared"] == 1
    assert not [a for a in seen["eve"]["/nodes/bay-2"]["posts"] if "/nodes/bay-2" in a]
    assert any("/nodes/air-1/" in a for a in seen["eve"]["/nodes/air-1"]["posts"])
