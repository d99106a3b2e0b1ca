"""`fleet doctor`: check a deployment and say in plain words what is wrong.

Each check is a small function of the deployment returning findings; CHECKS lists them in the
order they are printed. A feature with something to check (the broker's TLS certificate, say)
adds a function to CHECKS; certificate_findings() checks any certificate file the same way.
"""

import datetime
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fleet.broker import auth as brokerauth
from fleet.settings import Settings, SettingsError, WebSettings, web_from_env
from fleet.store import health
from fleet.store.migrate import SCHEMA_VERSION

OK, WARN, FAIL = "ok", "warn", "FAIL"
# A certificate expiring within this many days is a warning: time to renew, not yet an outage.
RENEW_DAYS = 30
# Free space below which the data directory's disk is a problem, and below which a warning.
MIN_FREE_BYTES = 1 << 30
WARN_FREE_FRACTION = 0.10
# How far ahead of the clock the newest stored time may be (nodes are stamped by this machine).
CLOCK_SLACK = 300.0


@dataclass(frozen=True)
class Finding:
    level: str  # OK, WARN or FAIL
    check: str
    text: str


@dataclass(frozen=True)
class Deployment:
    """What the checks look at: the settings of the fleet on this machine."""

    settings: Settings
    web: WebSettings | None  # None when the web settings themselves are wrong
    web_error: str | None = None


def certificate_findings(check: str, cert_path: Path, key_path: Path | None = None,
                         now: float | None = None) -> list[Finding]:
    """Readable, valid now, not expiring within RENEW_DAYS, and matching its key (if given)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
    except (OSError, ValueError) as e:
        return [Finding(FAIL, check, f"cannot read the certificate {cert_path}: {e}")]
    cert = certs[0]  # the server's own; the rest is its chain
    now_dt = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
    out = []
    ends, starts = cert.not_valid_after_utc, cert.not_valid_before_utc
    if ends <= now_dt:
        out.append(Finding(FAIL, check, f"{cert_path} expired on {ends:%Y-%m-%d}: browsers and "
                                        "nodes refuse it; renew it now"))
    elif starts > now_dt:
        out.append(Finding(FAIL, check, f"{cert_path} is valid only from {starts:%Y-%m-%d %H:%M}"
                                        " UTC: is this machine's clock right?"))
    elif ends - now_dt < datetime.timedelta(days=RENEW_DAYS):
        days = (ends - now_dt).days
        out.append(Finding(WARN, check, f"{cert_path} expires in {days} days "
                                        f"({ends:%Y-%m-%d}): renew it"))
    if key_path is not None:
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
        except (OSError, ValueError, TypeError) as e:
            return out + [Finding(FAIL, check, f"cannot read the key {key_path}: {e}")]
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if (key.public_key().public_bytes(serialization.Encoding.DER, pub)
                != cert.public_key().public_bytes(serialization.Encoding.DER, pub)):
            out.append(Finding(FAIL, check, f"the key {key_path} does not belong to the "
                                            f"certificate {cert_path}"))
        elif os.stat(key_path).st_mode & 0o077:
            out.append(Finding(WARN, check, f"the key {key_path} is readable by other users: "
                                            f"chmod 600 {key_path}"))
    if not out:
        names = ", ".join(str(n.value) for n in _alt_names(cert)) or cert.subject.rfc4514_string()
        out.append(Finding(OK, check, f"{cert_path} valid until {ends:%Y-%m-%d} for {names}"))
    return out


def _alt_names(cert):
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []


def check_web_certificate(d: Deployment) -> Iterable[Finding]:
    if d.web is None:
        return [Finding(FAIL, "web settings", d.web_error or "unreadable")]
    if d.web.tls_cert is None:
        where = ("behind the reverse proxies " + ", ".join(map(str, d.web.trusted_proxies))
                 if d.web.trusted_proxies else "for this machine only")
        return [Finding(OK, "web certificate", f"none: the UI is plain HTTP on {d.web.host}, "
                                               f"{where}")]
    return certificate_findings("web certificate", d.web.tls_cert, d.web.tls_key)


def check_node_certificates(d: Deployment) -> Iterable[Finding]:
    """The certificates nodes are served with (`fleet tls`, fleet/tls/certs.py) and their CA."""
    from fleet.settings import node_tls_from_env
    from fleet.tls import certs

    try:
        tls_dir = node_tls_from_env(d.settings.data_dir).tls_dir
    except SettingsError as e:
        return [Finding(FAIL, "node certificate", str(e))]
    if not certs.configured(tls_dir):
        return [Finding(OK, "node certificate", f"none in {tls_dir}: nodes are not served over "
                                                "TLS (fleet tls init --name HOST)")]
    return (certificate_findings("node certificate", tls_dir / certs.SERVER_CERT,
                                 tls_dir / certs.SERVER_KEY)
            + certificate_findings("node certificate", tls_dir / certs.CA_FILE))


def _answers(host: str, port: int, tls: bool = False) -> str | None:
    """None if host:port accepts a connection (and a TLS handshake), else why not."""
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            if tls:
                context = ssl.create_default_context()
                # Only whether TLS is spoken here; the certificate has its own check.
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                with context.wrap_socket(sock, server_hostname=host):
                    pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def check_ports(d: Deployment) -> Iterable[Finding]:
    out = []
    host = "127.0.0.1" if d.web is None or d.web.host in ("0.0.0.0", "::") else d.web.host
    tls = d.web is not None and d.web.tls_cert is not None
    why = _answers(host, d.settings.port, tls)
    what = f"{'https' if tls else 'http'}://{host}:{d.settings.port}"
    out.append(Finding(OK, "web port", f"{what} answers") if why is None else Finding(
        FAIL, "web port", f"nothing answers at {what} ({why}): is the fleet running? "
                          "(systemctl status polylink, or `fleet run`)"))
    try:
        mhost, mport, _, _ = d.settings.mqtt_target()
    except SettingsError as e:
        return out + [Finding(FAIL, "broker port", str(e))]
    why = _answers(mhost, mport)
    out.append(Finding(OK, "broker port", f"mqtt://{mhost}:{mport} answers") if why is None
               else Finding(FAIL, "broker port", f"the broker at mqtt://{mhost}:{mport} does not "
                                                 f"answer ({why}): nodes cannot send anything"))
    return out


def _logins(text: str) -> set[str]:
    return {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}


def check_broker_logins(d: Deployment) -> Iterable[Finding]:
    check = "broker logins"
    if d.settings.mqtt_url:
        return [Finding(OK, check, "external broker (MQTT_URL): its logins are managed there")]
    broker_dir = d.settings.broker_dir
    services = broker_dir / brokerauth.SERVICES_FILE
    if not (broker_dir / brokerauth.PASSWD_FILE).exists() or not services.exists():
        return [Finding(FAIL, check, f"no password file in {broker_dir}: start the fleet once "
                                     "(`fleet run` writes it)")]
    if not health.present(d.settings.db_path):
        return [Finding(FAIL, check, "no database to compare the broker's logins with")]
    try:
        current = health.schema_version(d.settings.db_path) == SCHEMA_VERSION
    except health.Unreadable:
        return [Finding(WARN, check, "not compared: the database cannot be read (below)")]
    if not current:
        return [Finding(WARN, check, "not compared: the database schema is not current (below)")]
    from fleet.store import identity as identity_store
    from fleet.store.base import connect

    # What the fleet would write now, rendered into a scratch folder with the same service
    # passwords, compared with what the broker reads. connect(), not open_db(): a doctor looks,
    # it never migrates.
    db = connect(d.settings.db_path)
    try:
        nodes = identity_store.active_mqtt_hashes(db)
        claims = identity_store.active_claim_token_hashes(db)
    finally:
        db.conn.close()
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copyfile(services, Path(scratch) / brokerauth.SERVICES_FILE)
        brokerauth.write_files(Path(scratch), nodes, claims)
        stale = []
        for name in (brokerauth.PASSWD_FILE, brokerauth.ACL_FILE, brokerauth.CLAIM_PASSWD_FILE,
                     brokerauth.CLAIM_ACL_FILE):
            want = (Path(scratch) / name).read_text()
            try:
                have = (broker_dir / name).read_text()
            except OSError:
                have = ""
            if want != have:
                stale.append((name, want, have))
    if not stale:
        return [Finding(OK, check, f"the broker's logins match the database ({len(nodes)} "
                                   "nodes)")]
    out = []
    for name, want, have in stale:
        extra, missing = _logins(have) - _logins(want), _logins(want) - _logins(have)
        detail = []
        if extra:
            detail.append("can still log in though revoked or unknown: "
                          + ", ".join(sorted(extra)))
        if missing:
            detail.append("cannot log in yet: " + ", ".join(sorted(missing)))
        out.append(Finding(FAIL, check, f"{broker_dir / name} differs from the database"
                                        f"{' (' + '; '.join(detail) + ')' if detail else ''}: "
                                        "run `fleet upkeep --once --broker-sync` or restart the "
                                        "fleet"))
    return out


def check_migrations(d: Deployment) -> Iterable[Finding]:
    check = "database"
    if not health.present(d.settings.db_path):
        return [Finding(FAIL, check, f"no database at {d.settings.db_path}: is DATA_DIR right? "
                                     "(`fleet run` or `fleet db migrate` creates it)")]
    try:
        version = health.schema_version(d.settings.db_path)
    except health.Unreadable as e:
        return [Finding(FAIL, check, f"cannot read {health.shown(d.settings.db_path)}: {e}")]
    if version < SCHEMA_VERSION:
        return [Finding(FAIL, check, f"schema version {version}, this fleet needs "
                                     f"{SCHEMA_VERSION}: run `fleet db migrate` (`fleet run` "
                                     "does it at start)")]
    if version > SCHEMA_VERSION:
        return [Finding(FAIL, check, f"schema version {version} was written by a newer fleet "
                                     f"(this one knows {SCHEMA_VERSION}): upgrade this fleet")]
    return [Finding(OK, check, f"schema version {version}, current")]


def check_disk(d: Deployment) -> Iterable[Finding]:
    folder = d.settings.data_dir if d.settings.data_dir.exists() else d.settings.data_dir.parent
    usage = shutil.disk_usage(folder)
    free = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB"
    if usage.free < MIN_FREE_BYTES:
        return [Finding(FAIL, "disk", f"only {free} for {folder}: the database stops taking "
                                      "readings when the disk is full; free space or set "
                                      "READINGS_DAYS")]
    if usage.free < WARN_FREE_FRACTION * usage.total:
        return [Finding(WARN, "disk", f"{free} for {folder}: less than "
                                      f"{WARN_FREE_FRACTION:.0%} left")]
    return [Finding(OK, "disk", f"{free} for {folder}")]


def ntp_synchronized() -> bool | None:
    """What systemd says about clock synchronisation; None when it cannot say (no timedatectl)."""
    tool = shutil.which("timedatectl")
    if tool is None:
        return None
    try:
        r = subprocess.run([tool, "show", "-p", "NTPSynchronized", "--value"],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = r.stdout.strip()
    return {"yes": True, "no": False}.get(value) if r.returncode == 0 else None


def check_clock(d: Deployment, now: float | None = None) -> Iterable[Finding]:
    now = time.time() if now is None else now
    out = []
    if health.present(d.settings.db_path):
        try:
            newest = health.newest_node_time(d.settings.db_path)
        except health.Unreadable:
            newest = None  # the database check says why
        if newest is not None and newest > now + CLOCK_SLACK:
            seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(newest))
            out.append(Finding(FAIL, "clock", f"the clock is behind: a node was seen at {seen} "
                                              f"UTC, {(newest - now) / 60:.0f} minutes from now; "
                                              "offline alerts and certificate checks go wrong: "
                                              "is NTP running?"))
    synced = ntp_synchronized()
    if synced is False:
        out.append(Finding(WARN, "clock", "systemd says the clock is not synchronised: "
                                          "`timedatectl set-ntp true`"))
    if not out:
        how = {True: "synchronised (NTP)", None: "no later than any stored time"}[synced]
        out.append(Finding(OK, "clock", f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))} "
                                        f"UTC, {how}"))
    return out


def check_backup_tools(d: Deployment) -> Iterable[Finding]:
    """On PostgreSQL, `fleet backup` needs the server's client tools (SQLite needs nothing)."""
    url = d.settings.database_url
    if not url:
        return []
    from fleet.store import pgdump

    try:
        found = pgdump.check_tools(url)
    except pgdump.DumpError as e:
        # A warning: the fleet runs, only its backups would fail.
        return [Finding(WARN, "backup tools", f"`fleet backup` would fail: {e}")]
    return [Finding(OK, "backup tools", found)]


CHECKS: list[Callable[[Deployment], Iterable[Finding]]] = [
    check_web_certificate, check_node_certificates, check_ports, check_broker_logins,
    check_migrations, check_disk, check_clock, check_backup_tools,
]


def deployment(settings: Settings) -> Deployment:
    try:
        return Deployment(settings, web_from_env())
    except SettingsError as e:
        return Deployment(settings, None, str(e))


def run(d: Deployment, checks=None) -> list[Finding]:
    """Every check's findings; a check that crashes is a finding too, never a traceback."""
    out = []
    for check in CHECKS if checks is None else checks:
        try:
            out.extend(check(d))
        except Exception as e:  # a broken check must not hide the others' findings
            out.append(Finding(FAIL, check.__name__.removeprefix("check_"),
                               f"the check itself failed: {type(e).__name__}: {e}"))
    return out
