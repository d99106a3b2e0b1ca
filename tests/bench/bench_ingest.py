"""Ingest throughput, broker to SQLite with zero loss, beside the raw mosquitto pub->sub rate.

Run: .venv/bin/python tests/bench/bench_ingest.py [--messages 200000] [--runs 3] [--nodes 100]

Each run starts a fresh mosquitto with the project's config and measures, on that broker:
  backlog  the consumer drains N QoS-1 frames queued for its persistent session while it was
           away (the publisher has finished, so the consumer has the machine to itself):
           raw    = a paho subscriber that only counts (auto ack);
           ingest = the real worker process (`fleet ingest`), timed from its start until all N
                    frames are committed in SQLite.
  live     the same, with the consumer running while a publisher process sends N frames as fast
           as paho can: all three processes (publisher, mosquitto, consumer) share the 2 cores.
The stored frame and reading counts are asserted, so a loss fails the benchmark.
"""

import argparse
import multiprocessing as mp
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from polylink import proto  # noqa: E402

from fleet.broker.server import MosquittoBroker  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frames(n: int, nodes: int):
    """(topic, payload) of n reference telemetry frames spread over `nodes` nodes."""
    buf = bytearray(64)
    out = []
    for i in range(n):
        node, seq = i % nodes, i // nodes
        size = proto.encode(buf, proto.TELEMETRY, seq & 0xFFFF,
                            [(0, 0, 21.5), (1, 0, 48.0), (2, 0, 3.71)])
        out.append((f"pl/v1/bench-{node}/up", bytes(buf[:size])))
    return out


def publisher(port: int, n: int, nodes: int, started, done, ca: str | None = None):
    """Publish n QoS-1 frames as fast as paho can (over TLS when ca names a CA file)."""
    msgs = frames(n, nodes)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub",
                         protocol=mqtt.MQTTv311)
    if ca:
        client.tls_set(ca_certs=ca)
    # Unlimited in flight, and no network thread: publish() then writes straight to the socket
    # and loop() only collects PUBACKs, which is several times faster than paho's threaded mode.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop(1.0)
    started.value = time.time()
    publish, loop = client.publish, client.loop
    for i, (topic, payload) in enumerate(msgs):
        publish(topic, payload, qos=1)
        if i % 200 == 199 and loop(0):
            raise SystemExit("publisher lost the broker")
    deadline = time.time() + 300
    while client._out_messages:
        if loop(0.01) or time.time() > deadline:
            raise SystemExit(f"publisher: {len(client._out_messages)} messages never acknowledged")
    done.value = time.time()
    client.disconnect()


def publish_all(port: int, n: int, nodes: int) -> float:
    """Publish n frames from a separate process; return the publisher's msg/s."""
    started, done = mp.Value("d", 0.0), mp.Value("d", 0.0)
    pub = mp.Process(target=publisher, args=(port, n, nodes, started, done), daemon=True)
    pub.start()
    pub.join()
    if pub.exitcode != 0:
        raise SystemExit("publisher failed")
    return n / (done.value - started.value)


class Counter:
    """A paho subscriber with a persistent session that only counts messages."""

    def __init__(self, port: int, n: int, client_id: str):
        self.port, self.n, self.count, self.last = port, n, 0, 0.0
        self.client_id = client_id
        self.client = self._client()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("pl/v1/+/up", qos=1)
        self.client.loop_start()
        time.sleep(0.5)

    def _client(self):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311, clean_session=False)
        client.on_message = self._on_message
        return client

    def _on_message(self, client, userdata, msg):
        self.count += 1
        if self.count >= self.n and not self.last:
            self.last = time.time()

    def away(self):
        self.client.disconnect()
        self.client.loop_stop()

    def back(self) -> float:
        self.client = self._client()
        started = time.time()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        return started

    def wait(self, started: float) -> float:
        deadline = time.time() + 600
        while self.count < self.n and time.time() < deadline:
            time.sleep(0.02)
        self.away()
        if self.count < self.n:
            raise SystemExit(f"raw subscriber got {self.count} of {self.n} messages")
        return self.n / (self.last - started)


def raw_backlog(port: int, n: int, nodes: int) -> float:
    counter = Counter(port, n, "bench-raw-backlog")
    counter.away()
    publish_all(port, n, nodes)
    return counter.wait(counter.back())


def raw_live(port: int, n: int, nodes: int) -> float:
    counter = Counter(port, n, "bench-raw-live")
    started, done = mp.Value("d", 0.0), mp.Value("d", 0.0)
    pub = mp.Process(target=publisher, args=(port, n, nodes, started, done), daemon=True)
    pub.start()
    while not started.value and pub.is_alive():
        time.sleep(0.001)
    rate = counter.wait(started.value)
    pub.join()
    return rate


class Ingest:
    """`fleet ingest` as its own process on a fresh DATA_DIR."""

    def __init__(self, port: int, data_dir: Path):
        self.env = dict(os.environ, DATA_DIR=str(data_dir), MQTT_PORT=str(port))
        self.env.pop("MQTT_URL", None)
        self.db_path = data_dir / "fleet.db"
        self.proc = None

    def start(self) -> float:
        started = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "ingest"],
                                     env=self.env, cwd=ROOT, stderr=subprocess.DEVNULL)
        return started

    def subscribed(self):
        while not self.db_path.exists():
            time.sleep(0.05)
        time.sleep(1.0)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)

    def wait(self, started: float, n: int) -> float:
        conn = sqlite3.connect(str(self.db_path), timeout=30)
        try:
            # Progress by the readings' max(rowid), an O(log n) lookup (the table only grows):
            # polling count(*) would scan the table every time and slow the worker it measures.
            progress, deadline = 0, time.time() + 600
            while progress < 3 * n and time.time() < deadline:
                time.sleep(0.02)
                progress = conn.execute("SELECT max(rowid) FROM readings").fetchone()[0] or 0
            finished = time.time()
            readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            stored = conn.execute(
                "SELECT count(*) FROM frames WHERE direction='up'").fetchone()[0]
        finally:
            conn.close()
        if stored != n or readings != 3 * n:
            raise SystemExit(f"ingest stored {stored} frames / {readings} readings of {n}")
        return n / (finished - started)


def ingest_backlog(port: int, n: int, nodes: int, data_dir: Path) -> tuple[float, float]:
    """(ingest msg/s, publisher msg/s) draining a backlog."""
    worker = Ingest(port, data_dir)
    worker.start()  # first run creates the persistent session; then stop so the broker queues
    worker.subscribed()
    worker.stop()
    pub_rate = publish_all(port, n, nodes)
    started = worker.start()
    try:
        return worker.wait(started, n), pub_rate
    finally:
        worker.stop()


def ingest_live(port: int, n: int, nodes: int, data_dir: Path) -> float:
    worker = Ingest(port, data_dir)
    worker.start()
    worker.subscribed()
    try:
        started, done = mp.Value("d", 0.0), mp.Value("d", 0.0)
        pub = mp.Process(target=publisher, args=(port, n, nodes, started, done), daemon=True)
        pub.start()
        while not started.value and pub.is_alive():
            time.sleep(0.001)
        rate = worker.wait(started.value, n)
        pub.join()
        return rate
    finally:
        worker.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    args = ap.parse_args()
    n, nodes = args.messages, args.nodes
    results: dict[str, list[float]] = {k: [] for k in
                                       ("raw backlog", "ingest backlog", "ingest live",
                                        "raw live", "publisher")}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            broker = MosquittoBroker(free_port(), tmp / "broker").start()
            try:
                results["raw backlog"].append(raw_backlog(broker.port, n, nodes))
                rate, pub_rate = ingest_backlog(broker.port, n, nodes, tmp / "backlog")
                results["ingest backlog"].append(rate)
                results["publisher"].append(pub_rate)
                # Ingest before raw: the worker's persistent session would otherwise hold the
                # raw phase's frames and drain them before the live publisher even starts.
                results["ingest live"].append(ingest_live(broker.port, n, nodes, tmp / "live"))
                results["raw live"].append(raw_live(broker.port, n, nodes))
            finally:
                broker.stop()
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items())
              + " msg/s", flush=True)
    print(f"\nmedians of {args.runs} runs, {n:,} QoS-1 frames (9 bytes, 3 readings) over "
          f"{nodes} nodes, msg/s:")
    print("| | raw mosquitto pub->sub (paho, counts only) | ingest to SQLite (no loss) |")
    print("|---|---|---|")
    for mode in ("backlog", "live"):
        print(f"| {mode} | {statistics.median(results['raw ' + mode]):,.0f} | "
              f"{statistics.median(results['ingest ' + mode]):,.0f} |")
    print(f"publisher alone: {statistics.median(results['publisher']):,.0f} msg/s")


if __name__ == "__main__":
    main()
