"""Providers configured in the fleet and their secrets (encrypted at rest); no network. Their
rows, transport identities and receptions are stored by fleet/store/providers.py."""

import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from fleet.datadir import secret_file
from fleet.store import audit as audit_store
from fleet.store import providers as provider_store
from fleet.store.base import DuplicateName

from . import ADAPTERS, LORAWAN_KINDS, ProviderError

KEY_FILE = "provider-secrets.key"
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
DEFAULT_DOWNLINKS_PER_DAY = 10  # The Things Network fair use


class PasswordNeeded(ProviderError):
    """A change of where a provider's password goes (host, port, TLS) came without the password."""


def _fernet(data_dir) -> Fernet:
    """The key that encrypts provider secrets, made on first use (mode 0600) in DATA_DIR."""
    path = Path(data_dir) / KEY_FILE
    return Fernet(secret_file(path, Fernet.generate_key).strip())


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
    """Add (or replace, by name) a provider; the password is stored encrypted, never returned.

    Without a password an edit keeps the stored one, but only while it still goes to the same
    host, port and TLS setting: otherwise whoever may edit a provider could point it at their own
    listener and read the secret. PasswordNeeded then, and nothing is changed.
    """
    c = check(cfg)
    if password is not None and not isinstance(password, str):
        raise ProviderError("password must be a string")
    secret = _fernet(data_dir).encrypt(password.encode()) if password else None
    row = dict(c, tls=int(c["tls"]), secret=secret, created=time.time())
    try:
        saved = provider_store.save_provider(db, row, keep_secret=password is None)
    except DuplicateName as e:  # another organisation's provider has that name
        raise ProviderError(str(e)) from None
    if not saved:
        raise PasswordNeeded(f"provider {c['name']}: changing the host, port or TLS needs the "
                             "password again (the stored one is only sent where it was given "
                             "for); nothing was changed")
    audit_store.audit(db, actor, "provider.set", c["name"],
                      {"kind": c["kind"], "host": c["host"], "port": c["port"],
                       "tls": c["tls"], "password": "new" if password else "kept"})
    return get(db, c["name"])


def _public(row: dict) -> dict:
    out = {k: row[k] for k in ("name", "kind", "host", "port", "application", "tenant",
                               "username", "downlinks_per_day", "created")}
    out["tls"] = bool(row["tls"])
    out["password_set"] = row.get("secret") is not None
    return out


def list_all(db) -> list[dict]:
    return [_public(r) for r in provider_store.list_providers(db)]


def get(db, name: str) -> dict:
    row = provider_store.get_provider(db, name)
    if row is None:
        raise KeyError(name)
    return _public(row)


def login(db, data_dir, name: str) -> tuple[dict, str | None]:
    """A provider's settings and its decrypted password, for the worker that connects to it."""
    row = provider_store.get_provider(db, name)
    if row is None:
        raise KeyError(name)
    pw = None
    if row["secret"] is not None:
        try:
            pw = _fernet(data_dir).decrypt(row["secret"]).decode()
        except InvalidToken:
            raise ProviderError(f"provider {name}: the stored password cannot be decrypted with"
                                f" {KEY_FILE} in the data directory (was it replaced?)") from None
    return _public(row), pw


def remove(db, name: str, actor=None) -> None:
    if not provider_store.delete_provider(db, name):
        raise KeyError(name)
    audit_store.audit(db, actor, "provider.remove", name)


def adapter(kind: str):
    return ADAPTERS[kind]
