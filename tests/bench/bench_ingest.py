"""Ingest throughput, broker to SQLite with zero loss, beside the raw mosquitto pub->sub rate.

Run: .venv/bin/python tests/bench/bench_ingest.py [--messages 200000] [--runs 3] [--nodes 100]

Each run starts a fresh mosquitto with the project's config, then measures two things on it:
  raw:    a paho subscriber that only counts (QoS 1, auto ack) while a publisher process sends N
          QoS-1 frames as fast as it can; msg/s = N / (first publish .. last message counted).
  ingest: the real ingest worker (own process, `fleet ingest`) while the same publisher sends N
          frames; msg/s = N / (first publish .. all N frames committed in SQLite); the count is
          asserted, so a loss fails the benchmark instead of flattering it.
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

from fleet.broker import MosquittoBroker  # noqa: E402


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


def publisher(port: int, n: int, nodes: int, started, done):
    """Publish n QoS-1 frames as fast as paho can, then report."""
    msgs = frames(n, nodes)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub",
                         protocol=mqtt.MQTTv311)
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
        if i % 200 == 199:
            loop(0)
    while client._out_messages:
        loop(0.01)
    done.value = time.time()
    client.disconnect()


def publish_all(port: int, n: int, nodes: int) -> float:
    """Publish n frames from a separate process; return the publisher's msg/s."""
    started, done = mp.Value("d", 0.0), mp.Value("d", 0.0)
    pub = mp.Process(target=publisher, args=(port, n, nodes, started, done))
    pub.start()
    pub.join()
    if pub.exitcode != 0:
        raise SystemExit("publisher failed")
    return n / (done.value - started.value)


def raw_run(port: int, n: int, nodes: int) -> float:
    """msg/s of a subscriber that only counts, draining a backlog of n queued frames."""
    count = 0
    last = [0.0]

    def on_message(client, userdata, msg):
        nonlocal count
        count += 1
        if count == n:
            last[0] = time.time()

    def session():
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-sub",
                          protocol=mqtt.MQTTv311, clean_session=False)
        sub.on_message = on_message
        return sub

    sub = session()
    sub.connect("127.0.0.1", port)
    sub.subscribe("pl/v1/+/up", qos=1)
    sub.loop(1.0)
    sub.loop(1.0)
    sub.disconnect()
    publish_all(port, n, nodes)
    sub = session()
    started = time.time()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    deadline = time.time() + 600
    while count < n and time.time() < deadline:
        time.sleep(0.02)
    sub.disconnect()
    sub.loop_stop()
    if count != n:
        raise SystemExit(f"raw subscriber got {count} of {n} messages")
    return n / (last[0] - started)


def ingest_run(port: int, n: int, nodes: int, data_dir: Path) -> tuple[float, float]:
    """(msg/s into SQLite, publisher msg/s): the real worker draining a backlog of n frames."""
    env = dict(os.environ, DATA_DIR=str(data_dir), MQTT_PORT=str(port))
    env.pop("MQTT_URL", None)
    command = [sys.executable, "-m", "fleet.cli", "ingest"]
    db_path = data_dir / "fleet.db"
    # First run: create the worker's persistent session, then stop it so the broker queues.
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    while not db_path.exists():
        time.sleep(0.05)
    time.sleep(1.0)
    worker.terminate()
    worker.wait(30)
    pub_rate = publish_all(port, n, nodes)
    conn = sqlite3.connect(str(db_path), timeout=30)
    started = time.time()
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        stored = 0
        deadline = time.time() + 600
        while stored < n and time.time() < deadline:
            time.sleep(0.02)
            stored = conn.execute("SELECT count(*) FROM frames WHERE direction='up'").fetchone()[0]
        finished = time.time()
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        if stored != n or readings != 3 * n:
            raise SystemExit(f"ingest stored {stored} frames / {readings} readings of {n}")
        return n / (finished - started), pub_rate
    finally:
        conn.close()
        worker.terminate()
        worker.wait(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    args = ap.parse_args()
    raw, ingest, pub = [], [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            broker = MosquittoBroker(free_port(), Path(tmp) / "broker").start()
            try:
                raw.append(raw_run(broker.port, args.messages, args.nodes))
                rate, pub_rate = ingest_run(broker.port, args.messages, args.nodes,
                                            Path(tmp) / "data")
                ingest.append(rate)
                pub.append(pub_rate)
            finally:
                broker.stop()
        print(f"run {run + 1}: raw pub->sub {raw[-1]:,.0f} msg/s, ingest {ingest[-1]:,.0f} msg/s "
              f"(publisher {pub[-1]:,.0f} msg/s)", flush=True)
    print(f"median of {args.runs} runs, {args.messages:,} QoS-1 frames over {args.nodes} nodes: "
          f"raw pub->sub {statistics.median(raw):,.0f} msg/s, "
          f"ingest to SQLite {statistics.median(ingest):,.0f} msg/s "
          f"(publisher alone {statistics.median(pub):,.0f} msg/s)")


if __name__ == "__main__":
    main()
