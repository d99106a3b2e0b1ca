"""End to end: simulated firmware nodes (WiFi) -> mosquitto -> `fleet run` (ingest and export
workers) -> a real SensorThings server (django-ogc-sensorthings on SQLite), which is stopped for
a while and started again. Afterwards the server has every stored reading exactly once, read
back through its own API, each node a Thing with its Datastreams."""

import sys
import time
from pathlib import Path

from polylink_host import sim
from services import READY, FleetRun, SensorThingsServer, free_port
from test_end_to_end import SimFleet, wait_until
from test_exports_end_to_end import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet" / "exports"))
from test_sensorthings_delivery import by_pid, get  # noqa: E402

from fleet.nodes.senml import name_and_unit  # noqa: E402
from fleet.store.base import connect  # noqa: E402

NODES = 3


def stored(db_path) -> set[tuple[str, int]]:
    """(Datastream polylink_id, time in ms) of every stored reading and event.

    Events too: the destination gets them as Observations of the node's "event" Datastream, and
    a simulated node sends one now and then on a loaded machine (a sensor read that failed, a
    restart after its watchdog), which a set of readings alone took for an extra Observation
    (a CI run failed so)."""
    db = connect(db_path)
    try:
        rows = db.conn.execute("SELECT node_id, qid, inst, t FROM readings").fetchall()
        events = db.conn.execute("SELECT node_id, t FROM events").fetchall()
    finally:
        db.conn.close()
    return ({(f"{n}/{name_and_unit(q, i)[0]}", round(t * 1000)) for n, q, i, t in rows}
            | {(f"{n}/event", round(t * 1000)) for n, t in events})


def on_server(server, nodes) -> list[tuple[str, int]]:
    """(Datastream polylink_id, time in ms) of every Observation of the nodes' Things."""
    from fleet.exports.sensorthings import ms

    out = []
    for node in nodes:
        for thing in by_pid(server, "Things", node):
            for ds in get(server, f"Things('{thing['@iot.id']}')/Datastreams"):
                pid = ds["properties"]["polylink_id"]
                out += [(pid, ms(o["phenomenonTime"])) for o in get(
                    server, f"Datastreams('{ds['@iot.id']}')/Observations"
                    "?$select=phenomenonTime")]
    return out


def test_every_reading_reaches_the_sensorthings_server_once_across_an_outage(
        tmp_path, mosquitto, database_url):
    data_dir = tmp_path / "data"
    store = database_url or data_dir / "fleet.db"  # the fleet's store on this run's backend
    server = SensorThingsServer(tmp_path / "sta").start()
    run = FleetRun(data_dir, free_port(), free_port(), mqtt_url=mosquitto.url)
    ids = sim.node_ids("sta", NODES)
    nodes = None
    try:
        run.wait_for(READY, timeout=60)
        cli(data_dir, "export", "add", "city-sta", "--kind", "sensorthings", "--url",
            server.url, "--secret-stdin", stdin=server.login + "\n")
        nodes = SimFleet(ids, tmp_path / "nodes", mosquitto.host, mosquitto.port)
        nodes.start()
        wait_until("first Things on the server",
                   lambda: all(by_pid(server, "Things", n) for n in ids), 60)
        server.stop()
        time.sleep(6)  # the nodes keep sending; the export waits
        assert "down" in cli(data_dir, "export", "list")
        server.start()
        time.sleep(3)
        nodes.stop()
        nodes = None
        time.sleep(2)  # the last frames reach the store
        wait_until("the destination up to date",
                   lambda: "up to date" in cli(data_dir, "export", "list"), 90)
        want = stored(store)
        assert len(want) > 30
        got = on_server(server, ids)
        assert len(got) == len(set(got)), "an Observation was created twice"
        assert set(got) == want
        assert all(len(by_pid(server, "Things", n)) == 1 for n in ids)
    finally:
        if nodes is not None:
            nodes.stop()
        run.stop()
        server.stop()
