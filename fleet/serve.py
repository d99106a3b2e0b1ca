"""`fleet run`: the broker, the ingest worker and the web app as one supervised service."""

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

from flask import url_for
from waitress.server import create_server

from fleet import create_app
from fleet.broker import auth as brokerauth
from fleet.broker import server as brokers
from fleet.broker import status as broker_status
from fleet.datadir import private_dir
from fleet.identity.claims import ClaimService
from fleet.ingest import CLIENT_ID as INGEST_CLIENT_ID
from fleet.ota.rollouts import Ticker
from fleet.settings import (
    DEFAULT_MQTT_PORT,
    Settings,
    SettingsError,
    WebSettings,
    node_tls_from_env,
    web_from_env,
)
from fleet.stopping import PARENT_ENV
from fleet.store import identity as identity_store
from fleet.store import users as user_store
from fleet.store.base import DuplicateName, StoreError
from fleet.store.migrate import open_db
from fleet.tls import certs as tls_certs
from fleet.web import auth

FIRST_ADMIN = "admin"
# A worker that dies this soon after starting is failing at start-up (bad store, broker gone):
# restarting it in a tight loop would only fill the log, so back off up to the cap.
_QUICK_DEATH = 5.0
_MAX_BACKOFF = 30.0
INGEST_GROUP = "ingest"  # the shared subscription of INGEST_WORKERS > 1


class ServeError(RuntimeError):
    """The fleet manager cannot start: a port is taken, the broker or the store failed."""


def say(text: str = "") -> None:
    """Print to the operator's terminal at once (stdout may be a pipe under make or a test)."""
    print(text, flush=True)


# Where `fleet run` looks for a free broker port when MQTT_PORT is not given and 1883 is taken.
_FALLBACK_MQTT_PORTS = range(1884, 1900)


def choose_mqtt_port(settings: Settings, default: int = DEFAULT_MQTT_PORT,
                     fallbacks=_FALLBACK_MQTT_PORTS) -> Settings:
    """Settings with the port our broker will listen on.

    MQTT_PORT given (or MQTT_URL): as given, check_ports() refuses a taken one. Not given: the
    default when free, else the first free fallback, said aloud. Recorded in DATA_DIR/broker/port
    by main() so `make sim` and the CLI reach the same broker.
    """
    if settings.mqtt_url is not None or settings.mqtt_port_chosen:
        return settings
    if brokers.port_is_free(default):
        return replace(settings, mqtt_port=default)
    for port in fallbacks:
        if brokers.port_is_free(port):
            say(f"port {default} is taken (a system mosquitto?): our broker listens on "
                f"127.0.0.1:{port} instead; `make sim` and the fleet CLI find it in "
                f"{settings.broker_port_file}. Set MQTT_PORT to choose, or MQTT_URL to use "
                f"the broker on {default}.")
            return replace(settings, mqtt_port=port)
    raise ServeError(brokers.port_in_use_message(default))


def record_mqtt_port(settings: Settings) -> None:
    """Write the broker's port where from_env() finds it (atomically: readers never see half)."""
    path = settings.broker_port_file
    private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{settings.mqtt_port}\n")
    os.replace(tmp, path)


def check_ports(settings: Settings) -> None:
    """Raise ServeError, saying how to choose another, if a port we must listen on is taken."""
    if not brokers.port_is_free(settings.port):
        other = 8001 if settings.port != 8001 else 8002
        raise ServeError(f"port {settings.port} is already in use (another fleet or web server?). "
                         f"Choose another with PORT={other} make run")
    if settings.mqtt_url is None and not brokers.port_is_free(settings.mqtt_port):
        raise ServeError(brokers.port_in_use_message(settings.mqtt_port))


def child_env(settings: Settings) -> dict[str, str]:
    """The environment for the ingest worker: the very settings this server runs with."""
    env = dict(os.environ)
    env["DATA_DIR"] = str(settings.data_dir)
    # A worker exits by itself when this process is gone (fleet/stopping.py).
    env[PARENT_ENV] = str(os.getpid())
    env["PORT"] = str(settings.port)
    env["MQTT_PORT"] = str(settings.mqtt_port)
    if settings.mqtt_url:
        env["MQTT_URL"] = settings.mqtt_url
    else:
        env.pop("MQTT_URL", None)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    else:
        env.pop("DATABASE_URL", None)
    return env


def prepare_store(settings: Settings) -> str | None:
    """Migrate the database; on the first run create the admin and return its password."""
    db = open_db(settings.db_path)
    try:
        if user_store.count_users(db):
            return None
        password = secrets.token_urlsafe(12)
        try:
            auth.create_user(db, FIRST_ADMIN, password, "admin")
        except DuplicateName:
            return None  # another `fleet run` on the same data won the race; it printed it
        return password
    finally:
        db.conn.close()


def claim_port() -> int | None:
    """CLAIM_PORT: the broker's listener for zero-touch claims (none when unset)."""
    raw = os.environ.get("CLAIM_PORT", "")
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"CLAIM_PORT={raw!r} is not a port number")
    return int(raw)


def tls_listener(settings: Settings) -> brokers.TLSListener | None:
    """The broker's MQTT-over-TLS listener for nodes, when `fleet tls` made or took certificates."""
    tls = node_tls_from_env(settings.data_dir)
    if not tls_certs.configured(tls.tls_dir):
        return None
    tls.check_ota_url()
    for c in tls_certs.certificates(tls.tls_dir):
        if c["days_left"] < 0:
            raise ServeError(f"the TLS {c['role']} certificate {c['path']} expired on "
                             f"{c['not_after']:%Y-%m-%d}: every node would refuse the broker. "
                             "Renew it: fleet tls renew")
    return brokers.TLSListener(tls.mqtt_tls_host, tls.mqtt_tls_port,
                               tls.tls_dir / tls_certs.SERVER_CERT,
                               tls.tls_dir / tls_certs.SERVER_KEY)


def sync_broker_logins(settings: Settings) -> None:
    """Write the broker's password and ACL files from the registered nodes (broker/auth.py)."""
    db = open_db(settings.db_path)
    try:
        brokerauth.write_files(settings.broker_dir, identity_store.active_mqtt_hashes(db),
                               identity_store.active_claim_token_hashes(db))
    finally:
        db.conn.close()


class Ingest:
    """The ingest worker process, restarted whenever it exits while the server runs."""

    def __init__(self, settings: Settings, mqtt_version: str | None = None, index: int = 0):
        self.env = child_env(settings)
        self.log_path = settings.data_dir / "logs" / ("ingest.log" if index == 0
                                                      else f"ingest-{index}.log")
        self.command = [sys.executable, "-m", "fleet.cli", "ingest"]
        if mqtt_version:
            self.command += ["--mqtt-version", mqtt_version]
        if settings.ingest_workers > 1:
            # INGEST_WORKERS: one shared subscription; worker 0 keeps the single worker's id.
            client_id = INGEST_CLIENT_ID + (f"-{index}" if index else "")
            self.command += ["--share", INGEST_GROUP, "--client-id", client_id]
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.restarts = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._supervise, name="ingest-supervisor",
                                       daemon=True)

    def start(self) -> None:
        # Spawned from the supervisor thread only: the child's parent-death signal follows the
        # thread that forked it, and this thread lives exactly as long as the server.
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.proc is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _spawn(self) -> None:
        self.proc = brokers.spawn(self.command, self.log_path, env=self.env)
        self.started = time.monotonic()

    def _supervise(self) -> None:
        self._spawn()
        backoff = 1.0
        while not self.stopping.wait(0.2):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            lived = time.monotonic() - self.started
            backoff = min(backoff * 2, _MAX_BACKOFF) if lived < _QUICK_DEATH else 1.0
            say(f"ingest worker exited with code {proc.returncode} after {lived:.0f} s; "
                f"restarting in {backoff:.0f} s (log: {self.log_path})")
            if self.stopping.wait(backoff):
                break
            self.restarts += 1
            self._spawn()
            say(f"ingest worker restarted (pid {self.pid})")
        if self.proc is not None:
            # SIGTERM: the worker stores and acknowledges the batch it holds, then exits.
            brokers.stop_process(self.proc, timeout=20)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(30)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class BrokerWatch:
    """Restarts the broker this server started whenever it exits, with the workers' backoff.

    Says so on the terminal and in DATA_DIR/broker/status.json, which every page shows.
    """

    def __init__(self, broker, settings: Settings):
        self.broker = broker
        self.broker_dir = settings.broker_dir
        self.started = time.monotonic()
        self.restarts = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._supervise, name="broker-supervisor",
                                       daemon=True)

    def start(self) -> "BrokerWatch":
        broker_status.write(self.broker_dir, "up", pid=self.broker.proc.pid, restarts=0)
        self.thread.start()
        return self

    def _supervise(self) -> None:
        # The restarted broker is spawned from this thread, which lives as long as the server:
        # the broker's parent-death signal follows it.
        backoff = 1.0
        while not self.stopping.wait(0.2):
            proc = self.broker.proc
            if proc is not None and proc.poll() is None:
                continue
            code = None if proc is None else proc.returncode
            lived = time.monotonic() - self.started
            backoff = min(backoff * 2, _MAX_BACKOFF) if lived < _QUICK_DEATH else 1.0
            broker_status.write(self.broker_dir, "down", exit_code=code, restarts=self.restarts,
                                retry_at=time.time() + backoff)
            say(f"broker ({self.broker.kind}) exited with code {code} after {lived:.0f} s; "
                f"restarting in {backoff:.0f} s (log: {self.broker.log_path})")
            if self.stopping.wait(backoff):
                break
            self.started = time.monotonic()
            try:
                self.broker.proc = None
                self.broker.start()
            except brokers.BrokerError as e:
                say(f"broker did not restart: {e}")
                continue
            self.restarts += 1
            broker_status.write(self.broker_dir, "up", pid=self.broker.proc.pid,
                                restarts=self.restarts)
            say(f"broker restarted (pid {self.broker.proc.pid})")

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(30)
        broker_status.clear(self.broker_dir)


def _interrupt(signum, frame):
    # waitress's run() returns on KeyboardInterrupt, so SIGTERM stops the server like Ctrl-C.
    raise KeyboardInterrupt


class ProviderIngest(Ingest):
    """The LoRaWAN provider ingest worker (`fleet provider ingest`), supervised the same way."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.log_path = settings.data_dir / "logs" / "providers.log"
        self.command = [sys.executable, "-m", "fleet.cli", "provider", "ingest"]


class ExportWorker(Ingest):
    """The export worker (`fleet export run`, fleet/exports/worker.py), supervised the same way."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.log_path = settings.data_dir / "logs" / "exports.log"
        self.command = [sys.executable, "-m", "fleet.cli", "export", "run"]


class UpkeepWorker(Ingest):
    """`fleet upkeep`: alerts, expired claim tokens, retention (fleet/upkeep.py), supervised."""

    def __init__(self, settings: Settings, broker_sync: bool):
        super().__init__(settings)
        self.log_path = settings.data_dir / "logs" / "upkeep.log"
        self.command = [sys.executable, "-m", "fleet.cli", "upkeep"]
        if broker_sync:
            self.command.append("--broker-sync")


def main(settings: Settings) -> None:
    """Run the fleet manager until Ctrl-C or SIGTERM; exit with a one-line error if it cannot."""
    # What this process and its children create (mosquitto's queued messages, the logs, files
    # datadir.py does not know of) is this user's only: the data directory holds secrets.
    os.umask(0o077)
    try:
        settings.mqtt_target()  # a malformed MQTT_URL fails here, not later in the worker
        settings = choose_mqtt_port(settings)
        check_ports(settings)
        web = web_from_env()  # a bad certificate or proxy address fails before anything starts
    except (ServeError, SettingsError) as e:
        raise SystemExit(f"error: {e}") from None

    # SIGINT explicitly too: a shell starting us in the background sets it to "ignore", and
    # Python then installs no KeyboardInterrupt for it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    broker = None
    watch = None
    ingest = None
    more_ingest: list[Ingest] = []  # INGEST_WORKERS > 1: the others of the shared subscription
    providers = None
    upkeep = None
    ticker = None
    claim_service = None
    try:
        password = prepare_store(settings)
        if settings.mqtt_url is None:
            # The password and ACL files must exist before mosquitto reads its config.
            sync_broker_logins(settings)
            broker = brokers.make_broker(settings.mqtt_port, settings.broker_dir, auth=True,
                                         claim_port=claim_port(), tls=tls_listener(settings))
            broker.start()
            watch = BrokerWatch(broker, settings).start()
            record_mqtt_port(settings)
        # amqtt speaks MQTT 3.1.1 only: say so whatever the worker's default is.
        on_amqtt = broker is not None and broker.kind == "amqtt"
        ingest = Ingest(settings, "3.1.1" if on_amqtt else None)
        ingest.start()
        for index in range(1, settings.ingest_workers):
            more_ingest.append(Ingest(settings, "3.1.1" if on_amqtt else None, index))
            more_ingest[-1].start()
        providers = ProviderIngest(settings)
        providers.start()
        exports = ExportWorker(settings)
        exports.start()
        # Only the mosquitto we started reads the files upkeep rewrites when a claim token expires.
        upkeep = UpkeepWorker(settings, broker is not None and broker.kind == "mosquitto")
        upkeep.start()
        ticker = Ticker(settings)  # moves OTA rollouts along (fleet/ota/rollouts.py)
        ticker.start()
        if broker is not None and broker.kind == "mosquitto" and claim_port():
            claim_service = ClaimService(settings).start()
        serve_web(settings, broker, ingest, password, web)
    except (brokers.BrokerError, StoreError, ServeError, SettingsError) as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the orderly stop short (ingest before broker).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        say("stopping…")
        if providers is not None:
            providers.stop()
        if exports is not None:
            exports.stop()
        if upkeep is not None:
            upkeep.stop()
        if ticker is not None:
            ticker.stop()
        if claim_service is not None:
            claim_service.stop()
        for worker in more_ingest:
            worker.stop()
        if ingest is not None:
            ingest.stop()
        if watch is not None:
            watch.stop()  # before the broker: stopping it is no crash to restart from
        if broker is not None:
            broker.stop()
        say("stopped")


def serve_web(settings: Settings, broker, ingest: Ingest, password: str | None,
              web: WebSettings | None = None) -> None:
    """Serve the web UI and API until interrupted: waitress on loopback, or HTTPS (cheroot)."""
    web = web or WebSettings()
    app = create_app({"SETTINGS": settings, "WEB": web})
    try:
        if web.tls_cert is not None:
            from fleet.web.https import HTTPSServer

            server = HTTPSServer(app, web, settings.port)
        else:
            # waitress would drop X-Forwarded-* itself; fleet/web/https.py decides whom to
            # believe, the same way for both servers.
            server = create_server(app, host=web.host, port=settings.port, threads=8,
                                   ident="polylink", clear_untrusted_proxy_headers=False)
    except OSError as e:
        raise ServeError(f"cannot listen on {web.host}:{settings.port}: {e.strerror}. "
                         "Choose another port with PORT=8001 make run") from None
    scheme = "https" if web.tls_cert is not None else "http"
    url = f"{scheme}://{'[' + web.host + ']' if ':' in web.host else web.host}:{settings.port}"
    with app.test_request_context():
        login_url = url + url_for("auth.login")
    say("Polylink fleet manager")
    say(f"  web UI and API  {url}  (API under {url}/api/v1)")
    if web.trusted_proxies:
        say("                  behind reverse proxies: X-Forwarded-* believed from "
            + ", ".join(map(str, web.trusted_proxies)) + " only")
    if broker is not None:
        say(f"  broker          {broker.kind} on mqtt://127.0.0.1:{settings.mqtt_port}"
            f"  (data and log in {settings.broker_dir})")
        tls = getattr(broker, "tls", None)
        if tls is not None:
            say(f"  nodes           MQTT over TLS on mqtt+ssl://{tls.host}:{tls.port}"
                f"  (certificate {tls.certfile})")
        if broker.kind == "mosquitto" and claim_port():
            say(f"  claims          zero-touch claim listener on mqtt://127.0.0.1:{claim_port()}")
        if broker.kind != "mosquitto":
            say("                  mosquitto is not installed: the embedded broker keeps "
                "queued messages in memory only")
            say("                  and lets any local client in, so it listens on loopback "
                "only: per-node logins, ACLs and other machines need mosquitto")
    else:
        host, port, _user, _pw = settings.mqtt_target()
        say(f"  broker          external, mqtt://{host}:{port} (MQTT_URL)")
    say(f"  ingest worker   pid {ingest.pid}  (log in {ingest.log_path})"
        + (f"; {settings.ingest_workers} workers on $share/{INGEST_GROUP}/..."
           if settings.ingest_workers > 1 else ""))
    say("  providers       LoRaWAN provider ingest (log in "
        f"{settings.data_dir / 'logs' / 'providers.log'}; add one at /providers)")
    say("  exports         one delivery loop per destination (log in "
        f"{settings.data_dir / 'logs' / 'exports.log'}; add one at /exports)")
    kept = ", ".join(f"{table} {days} d" for table, days in settings.retention().items() if days)
    say(f"  upkeep          alerts every {settings.upkeep_every:g} s; keeps {kept or 'everything'}"
        f"{', the rest for ever' if kept else ''} (log in "
        f"{settings.data_dir / 'logs' / 'upkeep.log'})")
    say(f"  data            {settings.data_dir}")
    say()
    if password is not None and os.environ.get("INVOCATION_ID"):
        # Under systemd (which sets INVOCATION_ID) this output is the journal, a log kept on
        # disk and readable by the adm group: no password there. `fleet user reset` gives one.
        say(f"First run: created the user {FIRST_ADMIN!r}; give it a password with "
            f"`sudo polylink user reset {FIRST_ADMIN}` (docs/operations.md)")
    elif password is not None:
        say(f"First run: created the user {FIRST_ADMIN!r} with password: {password}")
        say("  This password is shown only once. Store it now.")
    say(f"Log in at {login_url}. Add users with `.venv/bin/fleet user add NAME`, "
        "API tokens with `.venv/bin/fleet token create NAME`.")
    say("Press Ctrl-C to stop.")
    server.run()
