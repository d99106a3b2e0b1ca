"""SensorThings export: observations/s the adapter pushes into a real SensorThings server.

Run: .venv/bin/python tests/bench/bench_sensorthings.py [--print-only] [--readings N] [--runs R]
Starts the test server (django-ogc-sensorthings 1.2.0 on SQLite, tests/sta_server/, one waitress
thread) and pushes batches of 500 readings (10 nodes x temperature, humidity, battery voltage)
through fleet/exports/sensorthings.py's Sender, as the export worker does: once with the
dataArray extension (CreateObservations), once one POST per Observation (as to a server without
it). Each run uses new nodes; the first batch (which creates the Things, Locations, Datastreams)
is timed apart from the steady state. Medians of the runs. Prints a markdown section that
(unless --print-only) replaces "## Exports: SensorThings" in docs/benchmarks.md.
"""

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Exports: SensorThings"
NODES = 10
BATCH = 500
QUANTITIES = ((0, "temperature", "Cel"), (1, "humidity", "%RH"), (2, "battery_voltage", "V"))


def batches(readings: int):
    from fleet.exports.adapter import Batch, Item, Node

    run = uuid.uuid4().hex[:6]
    nodes = [Node(id=f"b{run}{i}", board="esp32", lat=52.5 + i / 100, lon=13.4)
             for i in range(NODES)]
    items, t = [], 1_700_000_000.0
    while len(items) < readings:
        for node in nodes:
            for qid, name, unit in QUANTITIES:
                items.append(Item(id=f"r:{node.id}:{qid}:0:{round(t * 1000)}", kind="reading",
                                  node=node, t=t, value=round(20 + t % 7, 2), qid=qid, inst=0,
                                  name=name, unit=unit))
        t += 1
    by_id = {n.id: n for n in nodes}
    return [Batch(items=tuple(items[i:i + BATCH]), nodes=by_id)
            for i in range(0, readings, BATCH)]


def push(server, readings: int, data_array: bool) -> tuple[float, float]:
    """(seconds for the first batch, observations/s over the other batches)."""
    from fleet.exports import sensorthings
    from fleet.exports.adapter import Destination

    dest = Destination(name="bench", kind="sensorthings", url=server.url, options={},
                       secret=server.login)
    sender = sensorthings.open(dest)
    sender.data_array = data_array
    todo = batches(readings)
    try:
        start = time.perf_counter()
        assert not sender.send(todo[0]).refused
        first = time.perf_counter() - start
        start = time.perf_counter()
        for batch in todo[1:]:
            assert not sender.send(batch).refused
        rest = time.perf_counter() - start
    finally:
        sender.close()
    return first, sum(len(b.items) for b in todo[1:]) / rest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--print-only", action="store_true")
    ap.add_argument("--readings", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from services import SensorThingsServer

    with tempfile.TemporaryDirectory() as tmp:
        server = SensorThingsServer(Path(tmp)).start()
        try:
            rows = {}
            for label, data_array, n in (("dataArray (CreateObservations)", True, args.readings),
                                         ("one POST per Observation", False,
                                          max(2 * BATCH, args.readings // 5))):
                runs = [push(server, n, data_array) for _ in range(args.runs)]
                rows[label] = (n, [r[0] for r in runs], [r[1] for r in runs])
        finally:
            server.stop()
    base = statistics.median(rows["one POST per Observation"][2])
    lines = [HEADING, "",
             f"`.venv/bin/python tests/bench/bench_sensorthings.py --readings {args.readings}"
             f" --runs {args.runs}`: fleet/exports/sensorthings.py's Sender pushing batches of"
             f" {BATCH} readings ({NODES} nodes x temperature, humidity, battery voltage) into the"
             " test server, django-ogc-sensorthings 1.2.0 on SQLite behind one waitress thread"
             " (tests/sta_server/), on this machine. Steady state: the entities exist; first"
             " batch: it also finds/creates the Things, Locations, Sensor, ObservedProperties and"
             f" {NODES * 3} Datastreams. Medians of {args.runs} runs"
             f" ({time.strftime('%Y-%m-%d')}, shared 2-core machine).", "",
             "| how | readings per run | observations/s (steady) | vs one by one | runs |"
             " first batch |",
             "|---|---:|---:|---:|---|---:|"]
    for label, (n, firsts, rates) in rows.items():
        med = statistics.median(rates)
        lines.append(f"| {label} | {n:,} | **{med:,.0f}** | {med / base:.1f}x |"
                     f" {' / '.join(f'{r:,.0f}' for r in rates)} |"
                     f" {statistics.median(firsts):.2f} s |")
    lines += ["", "These are the test server's figures more than the sender's (not measured apart"
              " here): each observation is a row insert through the Django ORM into SQLite behind"
              " one thread, and one by one each is also a whole request with its own connection"
              " (the server closes every connection). Far below the 20,000 msg/s ingest; a"
              " FROST-Server on PostgreSQL is what a city runs, and its rate is not measured"
              " here.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.print_only:
        doc = DOC.read_text()
        if HEADING in doc:
            head, _, tail = doc.partition(HEADING)
            rest = tail.split("\n## ", 1)
            doc = head + text + ("\n## " + rest[1] if len(rest) > 1 else "")
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        DOC.write_text(doc)


if __name__ == "__main__":
    main()
