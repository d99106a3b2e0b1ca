"""Providers configured in the fleet, their secrets (encrypted at rest), transport identities,
receptions (radio metadata per uplink) and the downlink budget. Storage only; no network."""

import json
import os
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from fleet import db as store
from fleet.datadir import private_dir

from . import ADAPTERS, LORAWAN_KINDS, ProviderError

KEY_FILE = "provider-secrets.key"
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
DEFAULT_DOWNLINKS_PER_DAY = 10  # The Things Network fair use


def _fernet(data_dir) -> Fernet:
    """The key that encrypts provider secrets, made on first use (mode 0600) in DATA_DIR."""
    path = Path(data_dir) / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        private_dir(path.parent)
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
    return Fernet(key.strip())


def check(cfg: dict) -> dict:
    """Validate a provider's settings; return them normalised. ProviderError says what is wrong."""
    name = cfg.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 32 or not set(name) <= NAME_CHARS:
        raise ProviderError("name must be 1..32 characters of a-z, 0-9 and '-'")
    if name == "mqtt":
        raise ProviderError("name 'mqtt' is the fleet's own broker")
    kind = cfg.get("kind")
    if kind not in LORAWAN_KINDS:
        raise ProviderError(f"kind must be one of {', '.join(LORAWAN_KINDS)}, got {kind!r}")
    host = cfg.get("host")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise ProviderError("host must be a host name or address, e.g. eu1.cloud.thethings.network")
    port = cfg.get("port", 8883 if cfg.get("tls") else 1883)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ProviderError(f"port must be 1..65535, got {port!r}")
    app = cfg.get("application")
    if not isinstance(app, str) or not app or "/" in app or "+" in app or "#" in app:
        raise ProviderError("application must be the provider's application id (no / + #)")
    tenant = cfg.get("tenant") or ("ttn" if kind == "tts" else None)
    if tenant is not None and (not isinstance(tenant, str) or set("/+#@") & set(tenant)):
        raise ProviderError("tenant must be a tenant id (no / + # @)")
    per_day = cfg.get("downlinks_per_day", DEFAULT_DOWNLINKS_PER_DAY)
    if isinstance(per_day, str) and per_day.isdigit():
        per_day = int(per_day)
    if not isinstance(per_day, int) or isinstance(per_day, bool) or not 0 <= per_day <= 10000:
        raise ProviderError(f"downlinks_per_day must be 0..10000, got {per_day!r}")
    username = cfg.get("username") or None
    if username is not None and not isinstance(username, str):
        raise ProviderError("username must be a string")
    return {"name": name, "kind": kind, "host": host, "port": port, "tls": bool(cfg.get("tls")),
            "application": app, "tenant": tenant, "username": username,
            "downlinks_per_day": per_day}


def add(db, data_dir, cfg: dict, password: str | None, actor=None) -> dict:
    """Add (or replace, by name) a provider; the password is stored encrypted, never returned."""
    c = check(cfg)
    if password is not None and not isinstance(password, str):
        raise ProviderError("password must be a string")
    secret = _fernet(data_dir).encrypt(password.encode()) if password else None
    row = dict(c, tls=int(c["tls"]), secret=secret, created=time.time())
    with store.transaction(db) as conn:
        old = conn.execute("SELECT secret FROM providers WHERE name = ?", (c["name"],)).fetchone()
        if old is not None and password is None:
            row["secret"] = old[0]  # editing without a new password keeps the old one
        conn.execute("DELETE FROM providers WHERE name = ?", (c["name"],))
        cols = ", ".join(row)
        conn.execute(f"INSERT INTO providers ({cols}) VALUES ({', '.join('?' * len(row))})",
                     list(row.values()))
    store.audit(db, actor, "provider.set", c["name"], json.dumps({"kind": c["kind"],
                                                                  "host": c["host"]}))
    return get(db, c["name"])


def _public(row: dict) -> dict:
    out = {k: row[k] for k in ("name", "kind", "host", "port", "application", "tenant",
                               "username", "downlinks_per_day", "created")}
    out["tls"] = bool(row["tls"])
    out["password_set"] = row.get("secret") is not None
    return out


def list_all(db) -> list[dict]:
    return [_public(r) for r in db.query("SELECT * FROM providers ORDER BY name")]


def get(db, name: str) -> dict:
    rows = list(db.query("SELECT * FROM providers WHERE name = ?", [name]))
    if not rows:
        raise KeyError(name)
    return _public(rows[0])


def login(db, data_dir, name: str) -> tuple[dict, str | None]:
    """A provider's settings and its decrypted password, for the worker that connects to it."""
    rows = list(db.query("SELECT * FROM providers WHERE name = ?", [name]))
    if not rows:
        raise KeyError(name)
    row = rows[0]
    pw = None
    if row["secret"] is not None:
        try:
            pw = _fernet(data_dir).decrypt(row["secret"]).decode()
        except InvalidToken:
            raise ProviderError(f"provider {name}: the stored password cannot be decrypted with"
                                f" {KEY_FILE} in the data directory (was it replaced?)") from None
    return _public(row), pw


def remove(db, name: str, actor=None) -> None:
    with store.transaction(db) as conn:
        if conn.execute("DELETE FROM providers WHERE name = ?", (name,)).rowcount == 0:
            raise KeyError(name)
    store.audit(db, actor, "provider.remove", name)


# --- transport identities --------------------------------------------------------------------


def link_identity(db, provider: str, ext_id: str, node_id: str, device_id=None) -> None:
    """Map a transport identity (DevEUI on a provider) to a node."""
    with store.transaction(db) as conn:
        conn.execute(
            "INSERT INTO transport_ids (provider, ext_id, node_id, device_id) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (provider, ext_id) DO UPDATE SET node_id = excluded.node_id,"
            " device_id = coalesce(excluded.device_id, device_id)",
            (provider, ext_id.upper(), node_id, device_id),
        )


def identities(db, node_id: str) -> list[dict]:
    return list(db.query("SELECT provider, ext_id, device_id, last_seen, last_dr FROM"
                         " transport_ids WHERE node_id = ? ORDER BY provider", [node_id]))


def resolve(db, provider: str) -> dict[str, str]:
    """ext_id -> node for one provider: its own mappings, then DevEUIs minted at registration."""
    out = {r["dev_eui"].upper(): r["node_id"] for r in db.query(
        "SELECT node_id, dev_eui FROM node_credentials WHERE dev_eui IS NOT NULL"
        " AND revoked_at IS NULL")}
    for r in db.query("SELECT ext_id, node_id FROM transport_ids WHERE provider = ?",
                      [provider]):
        out[r["ext_id"]] = r["node_id"]
    return out


def receptions(db, node_id: str, limit=50) -> list[dict]:
    return list(db.query(
        "SELECT seq, provider, received_at, gateway, rssi, snr, sf, dr, freq, airtime, fcnt"
        " FROM receptions WHERE node_id = ? ORDER BY received_at DESC, rowid DESC LIMIT ?",
        [node_id, limit]))


def recent_frames(db, node_id: str, limit=10) -> list[dict]:
    """A node's newest uplink frames with the provider that carried each (seq order: the
    primary key, so the node page stays fast with millions of frames) and how many gateways
    heard it."""
    rows = list(db.query(
        "SELECT seq, type, received_at, provider FROM frames WHERE node_id = ? AND direction ="
        " 'up' ORDER BY seq DESC LIMIT ?", [node_id, limit]))
    if rows:
        counts = dict(db.execute(
            "SELECT seq, count(*) FROM receptions WHERE node_id = ? AND seq >= ? GROUP BY seq",
            [node_id, rows[-1]["seq"]]).fetchall())
        for r in rows:
            r["receptions"] = counts.get(r["seq"], 0)
    return rows


def adapter(kind: str):
    return ADAPTERS[kind]
