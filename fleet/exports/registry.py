"""Export destinations registered in the fleet, their secrets (encrypted at rest) and their state;
no network. Rows and cursors are stored by fleet/store/exports.py."""

import json
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from fleet.datadir import secret_file
from fleet.store import audit as audit_store
from fleet.store import exports as export_store
from fleet.store.base import DuplicateName, valid_node_id

from . import ADAPTERS
from .adapter import Destination, ExportError

KEY_FILE = "export-secrets.key"
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class SecretNeeded(ExportError):
    """A change of where a destination's secret goes (kind, URL) came without the secret."""


def _fernet(data_dir) -> Fernet:
    """The key that encrypts destination secrets, made on first use (mode 0600) in DATA_DIR."""
    # Its own key, not the providers' one: either can be rotated without touching the other.
    path = Path(data_dir) / KEY_FILE
    return Fernet(secret_file(path, Fernet.generate_key).strip())


def _names(value, what: str, valid) -> list[str]:
    """A list of node ids or tags from a list or a comma-separated string."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and valid(v) for v in value):
        raise ExportError(f"{what} must be a list of {what} (or one string, comma-separated)")
    return sorted(set(value))


def check(cfg: dict) -> dict:
    """Validate a destination's settings; return them normalised. ExportError says what is wrong."""
    name = cfg.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 32 or not set(name) <= NAME_CHARS:
        raise ExportError("name must be 1..32 characters of a-z, 0-9 and '-'")
    if name == "readers":
        raise ExportError("name 'readers' is taken by /api/v1/exports/readers")
    kind = cfg.get("kind")
    if kind not in ADAPTERS:
        raise ExportError(f"kind must be one of {', '.join(sorted(ADAPTERS))}, got {kind!r}")
    url = cfg.get("url")
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ExportError("url must be the destination's address, without spaces")
    options = cfg.get("options") or {}
    if not isinstance(options, dict):
        raise ExportError("options must be a JSON object")
    options = ADAPTERS[kind].check(url, options)
    nodes = _names(cfg.get("nodes"), "nodes", valid_node_id)
    tags = _names(cfg.get("tags"), "tags", lambda t: 0 < len(t) <= 64)
    enabled = cfg.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ExportError("enabled must be true or false")
    return {"name": name, "kind": kind, "url": url, "options": options, "nodes": nodes,
            "tags": tags, "enabled": enabled}


def add(db, data_dir, cfg: dict, secret: str | None, actor=None, from_start=False) -> dict:
    """Register (or replace, by name) a destination; the secret is stored encrypted, never
    returned. A new one gets readings stored from now on, or all stored ones (from_start).

    Without a secret an edit keeps the stored one, but only while it goes to the same kind and
    URL: otherwise whoever may edit a destination could point it at their own listener and read
    the secret. SecretNeeded then, and nothing is changed.
    """
    c = check(cfg)
    if secret is not None and not isinstance(secret, str):
        raise ExportError("secret must be a string")
    enc = _fernet(data_dir).encrypt(secret.encode()) if secret else None
    row = dict(c, options=json.dumps(c["options"]), nodes=json.dumps(c["nodes"]),
               tags=json.dumps(c["tags"]), enabled=int(c["enabled"]), secret=enc,
               created=time.time())
    try:
        saved = export_store.save_destination(db, row, keep_secret=secret is None,
                                              start_at_end=not from_start)
    except DuplicateName as e:  # another organisation's destination has that name
        raise ExportError(str(e)) from None
    if not saved:
        raise SecretNeeded(f"destination {c['name']}: changing the kind or URL needs the secret"
                           " again (the stored one is only sent where it was given for);"
                           " nothing was changed")
    audit_store.audit(db, actor, "export.set", c["name"],
                      {"kind": c["kind"], "url": c["url"], "nodes": c["nodes"],
                       "tags": c["tags"], "secret": "new" if secret else "kept"})
    return get(db, c["name"])


def _public(db, row: dict) -> dict:
    """A destination as pages and the API show it: never the secret, with its state."""
    out = {k: row[k] for k in ("name", "kind", "url", "options", "nodes", "tags", "created",
                               "delivered", "refused", "last_ok", "last_error", "error_since",
                               "attempts", "next_try")}
    out["enabled"] = bool(row["enabled"])
    out["secret_set"] = row.get("secret") is not None
    out["behind"] = export_store.backlog(db, row["reading_at"], row["nodes"], row["tags"],
                                         row["org_id"])
    out["state"] = ("paused" if not row["enabled"] else "down" if row["last_error"] else
                    "catching up" if out["behind"] else "up to date")
    return out


def list_all(db) -> list[dict]:
    return [_public(db, r) for r in export_store.list_destinations(db)]


def get(db, name: str) -> dict:
    row = export_store.get_destination(db, name)
    if row is None:
        raise KeyError(name)
    return _public(db, row)


def lag(db, now: float | None = None) -> dict[str, tuple[int, float]]:
    """{destination: (readings behind, seconds since the oldest of them was measured; 0 when
    up to date)}: the export lag /metrics shows (fleet/web/metrics.register_export_lag)."""
    now = time.time() if now is None else now
    out = {}
    for row in export_store.list_destinations(db):
        behind, oldest = export_store.pending(db, row["reading_at"], row["nodes"], row["tags"],
                                              row["org_id"])
        # A node's clock may run ahead of the fleet's: never a negative lag.
        out[row["name"]] = (behind, 0.0 if oldest is None else max(0.0, now - oldest))
    return out


def refused(db, name: str, limit: int = 50) -> list[dict]:
    if export_store.get_destination(db, name) is None:
        raise KeyError(name)
    return export_store.refused_items(db, name, limit)


def destination(db, data_dir, name: str) -> Destination:
    """A destination with its decrypted secret, for the worker that sends to it."""
    row = export_store.get_destination(db, name)
    if row is None:
        raise KeyError(name)
    secret = None
    if row["secret"] is not None:
        try:
            secret = _fernet(data_dir).decrypt(row["secret"]).decode()
        except InvalidToken:
            raise ExportError(f"destination {name}: the stored secret cannot be decrypted with"
                              f" {KEY_FILE} in the data directory (was it replaced?)") from None
    return Destination(name=name, kind=row["kind"], url=row["url"], options=row["options"],
                       secret=secret)


def set_enabled(db, name: str, enabled: bool, actor=None) -> dict:
    """Pause (the cursor stays where it is, readings wait in the store) or resume."""
    if not export_store.set_enabled(db, name, enabled):
        raise KeyError(name)
    audit_store.audit(db, actor, "export.resume" if enabled else "export.pause", name)
    return get(db, name)


def remove(db, name: str, actor=None) -> None:
    if not export_store.delete_destination(db, name):
        raise KeyError(name)
    audit_store.audit(db, actor, "export.remove", name)
