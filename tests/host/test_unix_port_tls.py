"""What MicroPython's own `ssl` (mbedTLS, as on the ESP32) checks, on the real Unix port, through
the same open_connection the node's MQTT link and OTA downloads use (UnixHAL, with the CA loaded
by polylink/net/pem.py as the ESP32 HAL loads it): docs/firmware.md and docs/operations.md say
what it can and cannot check from these results.

The server is CPython's `ssl` with certificates `fleet tls` makes (fleet/tls/certs.py).
"""

import datetime
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from polylink_host import unixsim

from fleet.tls import certs

pytestmark = pytest.mark.micropython
PROBE = Path(__file__).with_name("tls_probe.py")


class EchoServer:
    """TLS on 127.0.0.1 with one certificate chain; echoes a line to each client."""

    def __init__(self, chain_pem: Path, key_pem: Path):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(chain_pem), str(key_pem))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.errors: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    with self.context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(tls.recv(100))
                except (ssl.SSLError, OSError) as e:
                    self.errors.append(str(e))

    def close(self):
        self.sock.close()


def pem(*certificates) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return unixsim.firmware_lib(tmp_path_factory.mktemp("mpy"))


@pytest.fixture(scope="module")
def ca():
    return certs.make_ca()


def serve(tmp_path, ca, names=("localhost",), now=None, days=30) -> EchoServer:
    ca_cert, ca_key = ca
    cert, key = certs.make_server(ca_cert, ca_key, list(names), days, now)
    (tmp_path / "server.pem").write_bytes(pem(cert, ca_cert))
    (tmp_path / "server.key").write_bytes(key_pem(key))
    return EchoServer(tmp_path / "server.pem", tmp_path / "server.key")


def probe(lib, tmp_path, host, port, trusted: bytes | None) -> str:
    """What the node says after connecting to host:port trusting `trusted` (PEM) or nothing."""
    flash = tmp_path / "flash"
    flash.mkdir(exist_ok=True)
    if trusted is not None:
        (flash / "ca.pem").write_bytes(trusted)
    out = subprocess.run([unixsim.find_micropython(), str(PROBE), str(lib), str(flash), host,
                          str(port), "ca.pem" if trusted is not None else "-"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_fleet_ca_and_the_right_name_connect(lib, tmp_path, ca):
    server = serve(tmp_path, ca, names=("localhost", "127.0.0.1"))
    try:
        assert probe(lib, tmp_path, "localhost", server.port, pem(ca[0])) == \
            "CONNECTED b'ping\\n'"
        # An address in the certificate's names is checked as a name too.
        assert probe(lib, tmp_path, "127.0.0.1", server.port, pem(ca[0])).startswith("CONNECTED")
        # A CA file of several roots (an operator's bundle): each is trusted.
        other, _ = certs.make_ca("Another root")
        assert probe(lib, tmp_path, "localhost", server.port, pem(other, ca[0])).startswith(
            "CONNECTED")
    finally:
        server.close()


def test_another_ca_is_refused(lib, tmp_path, ca):
    server = serve(tmp_path, ca)
    try:
        other, _ = certs.make_ca("Not the fleet's CA")
        said = probe(lib, tmp_path, "localhost", server.port, pem(other))
        assert said.startswith("REFUSED") and "not correctly signed" in said, said
    finally:
        server.close()


def test_a_certificate_for_another_name_is_refused(lib, tmp_path, ca):
    server = serve(tmp_path, ca, names=("fleet.example.org",))
    try:
        said = probe(lib, tmp_path, "localhost", server.port, pem(ca[0]))
        assert said.startswith("REFUSED") and "does not match with the expected CN" in said, said
    finally:
        server.close()


def test_an_expired_certificate_is_refused(lib, tmp_path, ca):
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
    server = serve(tmp_path, ca, now=long_ago, days=30)
    try:
        said = probe(lib, tmp_path, "localhost", server.port, pem(ca[0]))
        assert said.startswith("REFUSED") and "expired" in said, said
    finally:
        server.close()


def test_without_a_ca_nothing_is_checked(lib, tmp_path, ca):
    """CERT_NONE: why provisioning always writes the CA (docs/operations.md)."""
    server = serve(tmp_path, ca, names=("fleet.example.org",))
    try:
        assert probe(lib, tmp_path, "localhost", server.port, None).startswith("CONNECTED")
    finally:
        server.close()


def test_a_self_signed_server_certificate_as_the_ca_is_pinned(lib, tmp_path):
    """The pinning the docs describe: the server's own self-signed certificate as ca.pem."""
    from selfsigned import make_cert

    cert, key = make_cert(tmp_path / "pinned", name="localhost")
    other, _ = make_cert(tmp_path / "other", name="localhost")
    server = EchoServer(cert, key)
    try:
        assert probe(lib, tmp_path, "localhost", server.port, cert.read_bytes()).startswith(
            "CONNECTED")
        said = probe(lib, tmp_path, "localhost", server.port, other.read_bytes())
        assert said.startswith("REFUSED"), said
    finally:
        server.close()
