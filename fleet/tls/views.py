"""Every page warns the signed-in user when a TLS certificate nodes depend on is due for renewal."""

import time

from flask import current_app, g

from fleet.settings import SettingsError, node_tls_from_env
from fleet.tls import certs

_CACHE_S = 60.0  # a page should not parse certificates on every request; renewal takes days


def init_app(app) -> None:
    cache: dict = {"at": -_CACHE_S, "due": {}}

    @app.context_processor
    def tls_expiring():
        if getattr(g, "user", None) is None:
            return {"tls_expiring": {}}
        now = time.monotonic()
        if now - cache["at"] >= _CACHE_S:
            try:
                d = node_tls_from_env(current_app.config["SETTINGS"].data_dir).tls_dir
                cache["due"] = certs.expiring(d)
            except (certs.TLSError, SettingsError) as e:
                cache["due"] = {"error": f"the TLS certificates cannot be read: {e}"}
            cache["at"] = now
        return {"tls_expiring": cache["due"]}
