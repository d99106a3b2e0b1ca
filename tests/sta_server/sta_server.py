"""A real OGC SensorThings API 1.1 server for tests: django-ogc-sensorthings (PyPI) with its
Django ORM backend on SQLite, served by waitress. Run as a process of its own:

    python tests/sta_server/sta_server.py PORT DB_FILE [USER:PASSWORD]

It creates its tables, prints READY once it serves, and serves http://127.0.0.1:PORT/sta/v1.1
until SIGTERM. With USER:PASSWORD every request needs that HTTP Basic login (as FROST-Server
with its basic auth provider). The dataArray extension is on; what the server implements of
SensorThings 1.1 is in docs/integrations.md ("SensorThings").
"""

import base64
import hmac
import signal
import sys
from uuid import UUID

import django
from django.conf import settings

READY = "sensorthings server ready"


class BasicLogin:
    """Ninja auth handler: HTTP Basic with the one login given on the command line."""

    # django-ninja calls any callable auth handler with the request; truthy means allowed.
    def __init__(self, login: str):
        self.expected = "Basic " + base64.b64encode(login.encode()).decode()

    def __call__(self, request):
        got = request.headers.get("Authorization", "")
        return hmac.compare_digest(got, self.expected) or None


def configure(port: int, db_file: str, login: str | None) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="sta-test-server",  # noqa: S106 - a throwaway test server, no sessions
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "sensorthings.versions.v1_1",
            "sensorthings.versions.v1_1.backends.django",
            "sensorthings.versions.v1_1.extensions.dataarray",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_file,
                               "OPTIONS": {"timeout": 20}}},
        USE_TZ=True,
        # Server errors with their traceback on stderr, where the test fixture's log keeps them.
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "handlers": {"stderr": {"class": "logging.StreamHandler"}},
                 "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"},
                             "sensorthings": {"handlers": ["stderr"], "level": "WARNING"}}},
        TIME_ZONE="UTC",
        SENSORTHINGS_V1_1_SERVICE_URL=f"http://127.0.0.1:{port}/sta",
        SENSORTHINGS_V1_1_BACKEND_ADAPTER=(
            "sensorthings.versions.v1_1.backends.django.adapter.DjangoBackendAdapter"),
        SENSORTHINGS_V1_1_ID_TYPE=UUID,
        SENSORTHINGS_V1_1_ID_DELIMITER="'",
        SENSORTHINGS_V1_1_DOCS_ENABLED=False,
        SENSORTHINGS_V1_1_DEFAULT_AUTH_HANDLER=[BasicLogin(login)] if login else None,
    )
    django.setup()


urlpatterns: list = []


def main() -> None:
    port, db_file = int(sys.argv[1]), sys.argv[2]
    configure(port, db_file, sys.argv[3] if len(sys.argv) > 3 else None)
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.urls import include, path
    from waitress.server import create_server

    urlpatterns.append(path("sta/", include("sensorthings.versions.v1_1.urls")))
    call_command("migrate", verbosity=0, interactive=False)
    # One thread: SQLite takes one writer at a time, and the export sends one request at a time.
    server = create_server(get_wsgi_application(), host="127.0.0.1", port=port, threads=1)
    signal.signal(signal.SIGTERM, lambda *_: server.close() or sys.exit(0))
    print(READY, flush=True)
    server.run()


if __name__ == "__main__":
    main()
