"""What TLS costs nodes and ingest: the handshake per node connect, and ingest msg/s with the
publisher on mosquitto's TLS listener beside the plain loopback listener.

Run: .venv/bin/python tests/bench/bench_tls.py [--connects 300] [--messages 50000] [--runs 3]

Each run starts a fresh mosquitto with the project's config plus a TLS listener using a
certificate from `fleet tls init` (ECDSA P-256, our CA), both on 127.0.0.1, and measures:
  connect  one node connect, sequentially: TCP connect (+ TLS 1.2/1.3 handshake, chain and name
           checked against the CA) + MQTT CONNECT/CONNACK + DISCONNECT; wall time and this
           client's CPU time (the part a node pays; an ESP32 pays far more per ECDSA verify).
  ingest   the real worker (`fleet ingest`, on the plain loopback listener as in production)
           storing N QoS-1 frames to SQLite while a paho publisher sends them as fast as it can,
           over plain MQTT or over TLS. The stored counts are asserted: a loss fails the run.
"""

import argparse
import multiprocessing as mp
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench_ingest import Ingest, free_port, publisher  # noqa: E402

from fleet.broker.server import MosquittoBroker, render_config  # noqa: E402
from fleet.tls import certs  # noqa: E402

_CONNECT = bytes.fromhex("101a00044d5154540402000a000e706f6c796c696e6b2d70726f6265")
_DISCONNECT = bytes.fromhex("e000")


def broker_config(port: int, tls_port: int, broker_dir: Path, tls_dir: Path) -> str:
    """The project's config (anonymous, a benchmark) with a TLS listener beside the plain one."""
    return render_config(port, broker_dir) + (
        f"\nlistener {tls_port} 127.0.0.1\ncertfile {tls_dir / 'server.pem'}\n"
        f"keyfile {tls_dir / 'server.key'}\ntls_version tlsv1.2\nallow_anonymous true\n")


def connects(port: int, k: int, ctx: ssl.SSLContext | None) -> tuple[float, float, str]:
    """(median wall ms, median client CPU ms, TLS version) of k sequential node connects."""
    wall, cpu, version = [], [], "none"
    for _ in range(k):
        t0, c0 = time.perf_counter(), time.process_time()
        raw = socket.create_connection(("127.0.0.1", port))
        sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
        sock.sendall(_CONNECT)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise SystemExit("broker closed the connection")
            reply += chunk
        if reply[:2] != b"\x20\x02" or reply[3] != 0:
            raise SystemExit(f"CONNECT refused: {reply.hex()}")
        sock.sendall(_DISCONNECT)
        if ctx:
            version = sock.version()
        sock.close()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu), version


def ingest_live(plain_port: int, pub_port: int, ca: str | None, n: int, nodes: int,
                data_dir: Path) -> tuple[float, float]:
    """(ingest msg/s, publisher msg/s): the worker on plain loopback, the publisher on pub_port."""
    worker = Ingest(plain_port, data_dir)
    worker.start()
    worker.subscribed()
    try:
        started, done = mp.Value("d", 0.0), mp.Value("d", 0.0)
        pub = mp.Process(target=publisher, args=(pub_port, n, nodes, started, done, ca),
                         daemon=True)
        pub.start()
        while not started.value and pub.is_alive():
            time.sleep(0.001)
        rate = worker.wait(started.value, n)
        pub.join()
        if pub.exitcode != 0:
            raise SystemExit("publisher failed")
        return rate, n / (done.value - started.value)
    finally:
        worker.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connects", type=int, default=300)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    args = ap.parse_args()
    keys = ("connect plain", "connect tls", "cpu plain", "cpu tls", "ingest plain", "ingest tls",
            "pub plain", "pub tls")
    results: dict[str, list[float]] = {k: [] for k in keys}
    version = ""
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            tls_dir = certs.init(tmp / "tls", ["127.0.0.1"])
            ca = str(tls_dir / "ca.pem")
            port, tls_port = free_port(), free_port()
            broker = MosquittoBroker(port, tmp / "broker", config_text=broker_config(
                port, tls_port, tmp / "broker", tls_dir)).start()
            try:
                ctx = ssl.create_default_context(cafile=ca)
                for name, c in (("plain", None), ("tls", ctx)):
                    wall, cpu, v = connects(tls_port if c else port, args.connects, c)
                    results[f"connect {name}"].append(wall)
                    results[f"cpu {name}"].append(cpu)
                    version = v if c else version
                for name, p, c in (("plain", port, None), ("tls", tls_port, ca)):
                    rate, pub = ingest_live(port, p, c, args.messages, args.nodes,
                                            tmp / f"ingest-{name}")
                    results[f"ingest {name}"].append(rate)
                    results[f"pub {name}"].append(pub)
            finally:
                broker.stop()
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.2f}" for k, v in results.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians of {args.runs} runs; {args.connects} sequential connects per run "
          f"({version}, ECDSA P-256 server certificate); {args.messages:,} QoS-1 frames over "
          f"{args.nodes} nodes:")
    print("| | plain MQTT (loopback) | MQTT over TLS | TLS / plain |")
    print("|---|---|---|---|")
    print(f"| node connect, wall ms (median) | {med['connect plain']:.2f} | "
          f"{med['connect tls']:.2f} | {med['connect tls'] / med['connect plain']:.1f}x |")
    print(f"| node connect, client CPU ms (median) | {med['cpu plain']:.2f} | "
          f"{med['cpu tls']:.2f} | {med['cpu tls'] / max(med['cpu plain'], 0.001):.1f}x |")
    print(f"| ingest to SQLite, msg/s (publisher live) | {med['ingest plain']:,.0f} | "
          f"{med['ingest tls']:,.0f} | {med['ingest tls'] / med['ingest plain']:.2f} |")
    print(f"| publisher alone, msg/s | {med['pub plain']:,.0f} | {med['pub tls']:,.0f} | "
          f"{med['pub tls'] / med['pub plain']:.2f} |")


if __name__ == "__main__":
    main()
