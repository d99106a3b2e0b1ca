"""Polylink fleet manager: the Flask application factory."""

import secrets

from flask import Flask
from flask_compress import Compress

from fleet.datadir import secret_file
from fleet.settings import from_env, web_from_env


def _secret_key(data_dir) -> str:
    """The session signing key, kept in DATA_DIR so logins survive a restart."""
    key = secret_file(data_dir / "secret_key", lambda: secrets.token_hex(32).encode())
    return key.decode().strip()


def create_app(test_config=None):
    """Build the web UI + API application; test_config overrides settings from the environment."""
    app = Flask(__name__)
    settings = (test_config or {}).get("SETTINGS") or from_env()
    app.config.from_mapping(
        SETTINGS=settings,
        DATABASE=str(settings.db_path),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Failed logins allowed within the window (s) for one user name from one client
        # address, and for all names together from one address.
        LOGIN_MAX_FAILURES=5,
        LOGIN_MAX_FAILURES_PER_ADDRESS=20,
        LOGIN_WINDOW=300,
        # Compressed: style, script and the SVG charts, which hold no secret. Never HTML or JSON:
        # they carry CSRF tokens, API tokens or node passwords next to text a user typed, and
        # compressing both together leaks the secret through the size (BREACH).
        COMPRESS_MIMETYPES=["text/css", "text/javascript", "application/javascript",
                            "image/svg+xml"],
    )
    if test_config is not None:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(settings.data_dir)

    # Imported here, when an app is built: the workers and the CLI import fleet.* without
    # loading Flask and every view (start-up time).
    from fleet.alerts import api as alerts_api
    from fleet.alerts import views as alerts
    from fleet.exports import views as exports
    from fleet.identity import api as identity_api
    from fleet.identity import views as identity_views
    from fleet.nodes import api as nodes_api
    from fleet.nodes import views as nodes
    from fleet.organisations import views as organisations
    from fleet.ota import api as ota_api
    from fleet.ota import views as ota_views
    from fleet.profiles import suppliers
    from fleet.profiles import views as profiles
    from fleet.providers import views as providers
    from fleet.tls import views as tls_views
    from fleet.web import (
        access_api,
        accounts,
        admin,
        api,
        auth,
        db,
        filters,
        metrics,
        openapi,
        overview,
        params,
    )
    from fleet.web import https as web_https

    # HTTPS: Secure cookies, HSTS, X-Forwarded-* from trusted proxies only (fleet/web/https.py).
    web_https.init_app(app, (test_config or {}).get("WEB") or web_from_env())
    params.init_app(app)
    Compress(app)
    db.init_app(app)
    filters.init_app(app)
    auth.init_app(app)
    app.register_blueprint(auth.bp)
    nodes.init_app(app)
    alerts.init_app(app)
    app.register_blueprint(overview.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(accounts.bp)
    organisations.init_app(app)
    app.register_blueprint(identity_views.bp)
    providers.init_app(app)
    exports.init_app(app)
    profiles.init_app(app)
    suppliers.init_app(app)
    ota_api.init_app(app)
    tls_views.init_app(app)
    app.register_blueprint(ota_views.bp)
    api.init_app(app, [nodes_api.bp, alerts_api.bp, identity_api.bp, ota_api.bp, providers.api,
                       providers.radio_api, access_api.bp, exports.api, openapi.bp,
                       profiles.api, suppliers.api])
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.page)

    return app
