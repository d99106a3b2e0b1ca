"""Broker credentials and ACLs: mosquitto's password and ACL files, generated from the fleet.

Every node logs in as its own node id; the ACL lets it publish only pl/v1/{its id}/up and /conn
and read only pl/v1/{its id}/down. The ingest worker and the fleet's downlink publisher have
their own service accounts. The files are rewritten from the store whenever a credential changes,
and the running mosquitto re-reads them on SIGHUP (its pid is in broker_dir/broker.pid).
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import threading
from pathlib import Path

from fleet import topics
from fleet.datadir import private_dir
from fleet.store import exports as export_store
from fleet.store import identity as identity_store
from fleet.store import profiles as profile_store

# Service accounts: (username, ACL lines). Usernames start with the reserved prefix, which no node
# id may use, so a node can never be registered under a service's name.
RESERVED_PREFIX = "polylink-"
SERVICES = {
    "ingest": ("polylink-ingest", topics.SERVICE_ACLS["ingest"]),
    "fleet": ("polylink-fleet", topics.SERVICE_ACLS["fleet"]),
    # Answers zero-touch claims (fleet/identity/claims.py): reads requests, writes answers.
    "claims": ("polylink-claims", topics.SERVICE_ACLS["claims"]),
    # Publishes normalized readings for integrators (fleet/exports/mqtt.py).
    "exports": ("polylink-exports", topics.SERVICE_ACLS["exports"]),
}
# Integrators' read-only logins (fleet/exports/readers.py) are named with this prefix too.
READER_PREFIX = RESERVED_PREFIX + "reader-"
# The claim listener (a second port, its own password and ACL files): a claim token's id is the
# login, the client id the board's random claim id; a board reaches only its own two topics.
CLAIM_ACL = topics.CLAIM_ACL
CLAIM_PASSWD_FILE = "claim_passwd"
CLAIM_ACL_FILE = "claim_acl"
# %u is the username, which is the node id; use_username_as_clientid (mosquitto.conf) makes it the
# client id too, so a node cannot take over another node's session by choosing its client id.
NODE_ACL = topics.NODE_ACL
PASSWD_FILE = "passwd"
ACL_FILE = "acl"
SERVICES_FILE = "services.json"
PID_FILE = "broker.pid"  # written by fleet/broker/server.py when it starts the broker
# mosquitto's $7$ format: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte key, base64. Passwords are
# 192-bit random strings minted by the fleet, never chosen by people, so stretching adds nothing;
# 101 iterations is mosquitto_passwd's own default and keeps CONNECT cheap for large fleets.
_ITERATIONS = 101
_SALT_BYTES = 12


class BrokerAuthError(RuntimeError):
    """The broker's credential files cannot be written or the broker cannot be reloaded."""


def mint_password() -> str:
    """A new random MQTT password (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, salt: bytes | None = None, iterations: int = _ITERATIONS) -> str:
    """The password in mosquitto's $7$ (PBKDF2-SHA512) password-file format."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True if password matches a $7$ hash (constant-time compare)."""
    try:
        _, kind, iterations, salt, key = hashed.split("$")
        if kind != "7":
            return False
        want = base64.b64decode(key)
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                                  int(iterations), len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by this user only, atomically (temp file + rename)."""
    # A name of its own: the web process, the claim service and `fleet upkeep` may write at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def service_passwords(broker_dir: Path) -> dict[str, str]:
    """The service accounts' passwords, created on first use and kept in broker_dir (mode 0600)."""
    path = Path(broker_dir) / SERVICES_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        if set(stored) >= set(SERVICES):
            return stored
    else:
        stored = {}
    for name in SERVICES:
        stored.setdefault(name, mint_password())
    private_dir(path.parent)
    _write_private(path, json.dumps(stored))
    return stored


def service_login(broker_dir: Path, service: str) -> tuple[str, str] | None:
    """(username, password) of a service account, or None if the broker has no credentials yet."""
    path = Path(broker_dir) / SERVICES_FILE
    if not path.exists():
        return None
    password = json.loads(path.read_text()).get(service)
    return (SERVICES[service][0], password) if password else None


def render_passwd(node_hashes: dict[str, str], service_hashes: dict[str, str],
                  reader_hashes: dict[str, str] | None = None, suppliers=None) -> str:
    """mosquitto's password file: one `user:$7$...` line per service, reader, active node and
    supplier (suppliers: name -> (hash, node ids), from store/profiles.py)."""
    lines = [f"{SERVICES[name][0]}:{h}" for name, h in sorted(service_hashes.items())]
    lines += [f"{user}:{h}" for user, h in sorted((reader_hashes or {}).items())]
    lines += [f"{user}:{h}" for user, h in sorted(node_hashes.items())]
    lines += [f"{topics.supplier_user(name)}:{h}" for name, (h, _n) in sorted(
        (suppliers or {}).items())]
    return "\n".join(lines) + "\n"


def render_acl(reader_topics: dict[str, list[str]] | None = None, suppliers=None) -> str:
    """mosquitto's ACL file: the node patterns, each service account's topics, each
    integrator login's data topics (read only), and each supplier's: SenML about its own
    nodes, nothing else."""
    out = ["# Generated by the Polylink fleet (fleet/broker/auth.py); edits are overwritten.", ""]
    out += NODE_ACL
    for username, rules in SERVICES.values():
        out += ["", f"user {username}"] + rules
    for username, subscribed in sorted((reader_topics or {}).items()):
        out += ["", f"user {username}"] + [f"topic read {t}" for t in subscribed]
    for name, (_h, nodes) in sorted((suppliers or {}).items()):
        out += ["", f"user {topics.supplier_user(name)}"]
        out += [f"topic write {topics.senml(node)}" for node in nodes]
    return "\n".join(out) + "\n"


def write_files(broker_dir: Path, node_hashes: dict[str, str],
                claim_hashes: dict[str, str] | None = None, readers: dict | None = None,
                suppliers=None) -> bool:
    """Write passwd and acl (and the claim listener's pair) into broker_dir; True if changed.

    readers: {login: ($7$ hash, [topics it may read])} of integrators' read-only logins.
    """
    broker_dir = private_dir(broker_dir)
    passwords = service_passwords(broker_dir)
    # Service hashes are kept stable across rewrites (same salt), so an unchanged fleet writes an
    # unchanged file and the broker is not reloaded for nothing.
    salts = {name: hashlib.sha256(("salt:" + pw).encode()).digest()[:_SALT_BYTES]
             for name, pw in passwords.items()}
    service_hashes = {name: hash_password(passwords[name], salts[name]) for name in SERVICES}
    changed = False
    claim_passwd = "".join(f"{tid}:{h}\n" for tid, h in sorted((claim_hashes or {}).items()))
    claim_acl = "# Generated by the Polylink fleet; edits are overwritten.\n" + "\n".join(
        CLAIM_ACL) + "\n"
    readers = readers or {}
    reader_hashes = {user: h for user, (h, _t) in readers.items()}
    reader_topics = {user: t for user, (_h, t) in readers.items()}
    for name, text in ((PASSWD_FILE, render_passwd(node_hashes, service_hashes, reader_hashes,
                                                   suppliers)),
                       (ACL_FILE, render_acl(reader_topics, suppliers)),
                       (CLAIM_PASSWD_FILE, claim_passwd),
                       (CLAIM_ACL_FILE, claim_acl)):
        path = broker_dir / name
        if not path.exists() or path.read_text() != text:
            _write_private(path, text)
            changed = True
    return changed


def reload_broker(broker_dir: Path) -> bool:
    """SIGHUP the mosquitto the fleet started with broker_dir; False if none runs.

    mosquitto re-reads both files and disconnects connected clients whose login is gone
    (checked with mosquitto 2.0.11 in tests/provisioning/test_broker_auth.py).
    """
    path = Path(broker_dir) / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    except PermissionError as e:
        raise BrokerAuthError(f"cannot signal the broker (pid {pid}) to reload: {e}") from None
    return True


def reader_topics(reader: dict) -> list[str]:
    """The data topics an integrator's login may read: its nodes' (resolved now), or all."""
    if reader["all_nodes"]:
        return [topics.data("+")]
    return [topics.data(node) for node in reader["node_ids"]]


def sync(db, broker_dir: Path) -> bool:
    """Bring the broker's files in line with the store and reload it if they changed.

    Returns True if the files changed. Revocations and new nodes take effect at the broker here.
    """
    changed = write_files(broker_dir, identity_store.active_mqtt_hashes(db),
                          identity_store.active_claim_token_hashes(db),
                          {READER_PREFIX + r["name"]: (r["hash"], reader_topics(r))
                           for r in export_store.readers(db, every_organisation=True)},
                          suppliers=profile_store.supplier_logins(db))
    if changed:
        reload_broker(broker_dir)
    return changed
