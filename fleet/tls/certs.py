"""The certificates the broker serves nodes with: a private CA the fleet makes, or the operator's.

Files in the TLS directory (DATA_DIR/tls, or TLS_DIR), all this user's only:
  ca.pem      what nodes trust (our CA, or the root the operator's certificate chains to)
  ca.key      our CA's private key (absent with operator certificates: we cannot renew those)
  server.pem  the broker's (and OTA file server's) certificate, then its chain
  server.key  its private key

Why our own CA and not a self-signed server certificate pinned on the node: a node keeps trusting
the CA while the server certificate is renewed every year, so renewal never means reflashing.
The CA key never leaves the data directory; nodes get only ca.pem.
"""

import datetime
import ipaddress
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.datadir import PRIVATE_FILE, private_dir

CA_DAYS = 3650
SERVER_DAYS = 365
# Renew (and warn in the UI, raise an alert) when a certificate has fewer days than this left.
RENEW_DAYS = 30
CA_FILE, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.pem", "ca.key", "server.pem", "server.key"
NAMES_FILE = "names.json"  # the names the server certificate was made for, for renewal


class TLSError(ValueError):
    """A certificate cannot be made, read or used as asked."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes) -> None:
    """Write atomically, 0600: a half-written key must never be read by mosquitto."""
    private_dir(path.parent)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def split_names(names) -> list[x509.GeneralName]:
    """SubjectAlternativeName entries for DNS names and IP addresses; TLSError if one is bad."""
    out: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        labels = name.rstrip(".").split(".")
        if not all(lab and len(lab) <= 63 and all(c.isalnum() or c == "-" for c in lab)
                   and lab[0] != "-" and lab[-1] != "-" for lab in labels):
            raise TLSError(f"{raw!r} is neither an IP address nor a DNS name "
                           "(letters, digits and '-' between dots)")
        out.append(x509.DNSName(name.rstrip(".").lower()))
    if not out:
        raise TLSError("give at least one name or address nodes reach the fleet by, "
                       "e.g. --name fleet.example.org --name 192.168.1.10")
    return out


def make_ca(common_name: str = "Polylink fleet CA", days: int = CA_DAYS, now=None):
    """(certificate, key) of a new CA that may sign server certificates only (path length 0)."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_server(ca_cert, ca_key, names, days: int = SERVER_DAYS, now=None):
    """(certificate, key) for a server reached by names (DNS names and IP addresses).

    P-256 ECDSA: an ESP32's mbedTLS verifies it several times faster than RSA-2048 and the
    certificate is half the size in the node's RAM during the handshake.
    """
    now = now or _now()
    alt = split_names(names)
    key = ec.generate_private_key(ec.SECP256R1())
    first = alt[0].value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first))]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init(d, names, days: int = SERVER_DAYS, force: bool = False, now=None) -> Path:
    """Make the private CA (kept if there is one) and a server certificate for names.

    Refuses to replace operator-given certificates unless force. Returns the TLS directory.
    now: when the certificate starts (tests make expired ones).
    """
    if not 1 <= days <= CA_DAYS:
        raise TLSError(f"a server certificate is valid for 1..{CA_DAYS} days, not {days}")
    d = Path(d)
    has_ca = (d / CA_KEY).exists()
    if (d / SERVER_CERT).exists() and not has_ca and not force:
        raise TLSError(f"{d} holds certificates the operator gave (no CA key of ours); "
                       "`fleet tls init --force` replaces them with a private CA")
    if has_ca:
        ca_cert, ca_key = _load_ca(d)
    else:
        ca_cert, ca_key = make_ca()
        _write(d / CA_KEY, _key_pem(ca_key))
        _write(d / CA_FILE, _pem(ca_cert))
    alt = [str(n.value) for n in split_names(names)]
    cert, key = make_server(ca_cert, ca_key, alt, days, now)
    _write(d / SERVER_KEY, _key_pem(key))
    _write(d / SERVER_CERT, _pem(cert) + _pem(ca_cert))
    _write(d / NAMES_FILE, json.dumps(alt).encode())
    return d


def _load_ca(d: Path):
    try:
        cert = x509.load_pem_x509_certificate((d / CA_FILE).read_bytes())
        key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), None)
    except (OSError, ValueError) as e:
        raise TLSError(f"cannot read the fleet's CA in {d}: {e}") from None
    return cert, key


def renew(d, days: int = SERVER_DAYS) -> Path:
    """A new server certificate from our CA for the same names; TLSError for operator certs."""
    d = Path(d)
    if not (d / CA_KEY).exists():
        raise TLSError(f"no CA key of ours in {d}: renew the operator's certificate where it "
                       "was issued, then `fleet tls use` it again")
    try:
        names = json.loads((d / NAMES_FILE).read_text())
    except (OSError, ValueError):
        names = [str(n.value) for n in _alt_names(_read_chain(d / SERVER_CERT)[0])]
    return init(d, names, days)


def use(d, cert_path, key_path, ca_path) -> Path:
    """Serve with the operator's certificate (and chain), key, and the root nodes should trust.

    Checks that the key matches the certificate and that the certificate chains to ca_path's
    root, so a mistake shows here and not as every node failing to connect.
    """
    chain = _read_chain(Path(cert_path))
    try:
        key_data = Path(key_path).read_bytes()
        key = serialization.load_pem_private_key(key_data, None)
    except (OSError, ValueError, TypeError) as e:
        raise TLSError(f"cannot read the private key {key_path} (PEM, no passphrase): {e}"
                       ) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != chain[0].public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise TLSError(f"the key {key_path} does not belong to the certificate {cert_path}")
    roots = _read_chain(Path(ca_path))
    if not _chains_to(chain, roots):
        raise TLSError(f"{cert_path} is not issued by (a certificate in) {ca_path}: nodes "
                       "given that CA would refuse the broker")
    d = Path(d)
    _write(d / SERVER_CERT, b"".join(_pem(c) for c in chain))
    _write(d / SERVER_KEY, key_data)
    _write(d / CA_FILE, b"".join(_pem(c) for c in roots))
    (d / CA_KEY).unlink(missing_ok=True)  # an old private CA no longer vouches for this server
    (d / NAMES_FILE).unlink(missing_ok=True)
    return d


def _chains_to(chain, roots) -> bool:
    """True when chain[0], through the rest of chain, is signed by one of roots."""
    pool = list(chain[1:]) + list(roots)
    cert = chain[0]
    for _ in range(len(pool) + 1):
        if any(cert.issuer == r.subject and _signed_by(cert, r) for r in roots):
            return True
        parent = next((c for c in pool if c.subject == cert.issuer and _signed_by(cert, c)), None)
        if parent is None or parent is cert:
            return False
        cert = parent
    return False


def _signed_by(cert, issuer) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (InvalidSignature, ValueError, TypeError):  # bad signature, other issuer, key type
        return False


def _read_chain(path: Path) -> list:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as e:
        raise TLSError(f"cannot read the certificate {path} (PEM): {e}") from None
    return certs


def _alt_names(cert) -> list:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def configured(d) -> bool:
    """True when the TLS directory holds a server certificate, key and CA (TLS can be served)."""
    d = Path(d)
    return all((d / f).is_file() for f in (SERVER_CERT, SERVER_KEY, CA_FILE))


def certificates(d, now=None) -> list[dict]:
    """Each certificate the fleet serves or hands to nodes: for `fleet doctor` and the UI.

    [{"role": "server" | "ca", "path": Path, "names": [str], "not_after": datetime,
      "days_left": float, "renew": bool, "ours": bool}], empty when TLS is not set up.
    """
    now = now or _now()
    d = Path(d)
    ours = (d / CA_KEY).exists()
    out = []
    for role, name in (("server", SERVER_CERT), ("ca", CA_FILE)):
        path = d / name
        if not path.exists():
            continue
        cert = _read_chain(path)[0]
        names = [str(n.value) for n in _alt_names(cert)]
        if not names:
            names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        left = (cert.not_valid_after_utc - now).total_seconds() / 86400
        out.append({"role": role, "path": path, "names": names,
                    "not_after": cert.not_valid_after_utc, "days_left": left,
                    "renew": left < RENEW_DAYS, "ours": ours})
    return out


def fleet_certificates(data_dir, now=None) -> list[dict]:
    """certificates() of the fleet's own TLS directory (TLS_DIR, else DATA_DIR/tls): what
    `fleet doctor` calls."""
    from fleet.settings import node_tls_from_env  # settings -> broker.auth; keep this module light

    return certificates(node_tls_from_env(Path(data_dir)).tls_dir, now)


def expiring(d, now=None) -> dict[str, str]:
    """{role: plain words} for each certificate due for renewal or expired (alerts, UI)."""
    out = {}
    for c in certificates(d, now):
        if not c["renew"]:
            continue
        how = ("`fleet tls renew`" if c["ours"] and c["role"] == "server" else
               "a new one from its issuer, then `fleet tls use`")
        state = ("expired on" if c["days_left"] < 0 else f"expires in {int(c['days_left'])} days,")
        out[c["role"]] = (f"TLS {c['role']} certificate {c['path'].name} ({', '.join(c['names'])}) "
                          f"{state} {c['not_after']:%Y-%m-%d}; renew it with {how}")
    return out
