"""What the TLS end-to-end tests share: certificates, a TLS mosquitto, the sockets of a fleet."""

import datetime
import socket
import ssl
from pathlib import Path

import psutil
from services import free_port

from fleet.broker import auth as brokerauth
from fleet.broker.server import MosquittoBroker, TLSListener


def write_pair(d: Path, cert, key, ca_cert) -> tuple[Path, Path]:
    """server.pem (with its CA) and server.key in d, as `fleet tls` lays them out."""
    d.mkdir(parents=True, exist_ok=True)
    from cryptography.hazmat.primitives import serialization

    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                   + ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return d / "server.pem", d / "server.key"


def ca_pem(ca_cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return ca_cert.public_bytes(serialization.Encoding.PEM)


def tls_mosquitto(broker_dir: Path, certfile: Path, keyfile: Path,
                  logins: dict[str, str] | None = None) -> MosquittoBroker:
    """mosquitto with the project's config, its TLS listener on 127.0.0.1 with these files."""
    brokerauth.write_files(broker_dir, {u: brokerauth.hash_password(p)
                                        for u, p in (logins or {}).items()})
    for attempt in range(5):
        broker = MosquittoBroker(free_port(), broker_dir, auth=True,
                                 tls=TLSListener("127.0.0.1", free_port(), certfile, keyfile))
        try:
            return broker.start()
        except Exception:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def past(days: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)


def plain_network_listeners(pid: int, ca_file: Path) -> list[str]:
    """Every socket a process tree listens on beyond loopback that does not complete a TLS
    handshake with the fleet's CA: each is a plain service on the network."""
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    bad = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for c in conns:
            if c.status != psutil.CONN_LISTEN:
                continue
            host, port = c.laddr.ip, c.laddr.port
            if host in ("127.0.0.1", "::1") or host.startswith("127."):
                continue
            if not _speaks_tls(port, ca_file):
                bad.append(f"{proc.name()} (pid {proc.pid}) on {host}:{port}")
    return bad


def _speaks_tls(port: int, ca_file: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False  # the name is the nodes' business; here: TLS or not
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw) as tls:
            return tls.version() is not None
    except (OSError, ssl.SSLError):
        return False
