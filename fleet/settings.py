"""Settings shared by the server, the CLI and the simulator, read from the environment."""

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from fleet.broker.auth import service_login


class SettingsError(ValueError):
    """A setting in the environment is malformed."""


DEFAULT_STATUS_LOG_DAYS = 90
DEFAULT_BAD_FRAMES_DAYS = 30
# Days of LoRaWAN downlink records kept: only today's count against a node's daily budget, the
# rest is history for diagnosis (one row per downlink and per ACK of a confirmed uplink).
DOWNLINK_LOG_DAYS = 7
DEFAULT_UPKEEP_EVERY = 30.0


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    port: int
    mqtt_port: int
    mqtt_url: str | None
    # False when MQTT_PORT was not given: `fleet run` may then move its broker off a taken 1883.
    mqtt_port_chosen: bool = True
    # Days of STATUS history (status_log) kept; older rows are pruned by fleet/upkeep.py. 0: all.
    status_log_days: int = DEFAULT_STATUS_LOG_DAYS
    # Days of readings and their radio receptions kept (0: all, the default: it is the city's data).
    readings_days: int = 0
    # Days of node events kept (0: all).
    events_days: int = 0
    # Days of frames that failed to decode kept (their payloads, for diagnosis). 0: all.
    bad_frames_days: int = DEFAULT_BAD_FRAMES_DAYS
    # Seconds between rounds of the periodic work of `fleet run` (alerts, broker logins).
    upkeep_every: float = DEFAULT_UPKEEP_EVERY
    # DATABASE_URL (postgresql://user:pass@host/db): the fleet's store on PostgreSQL; None keeps
    # it in the SQLite file DATA_DIR/fleet.db.
    database_url: str | None = None
    # INGEST_WORKERS: how many ingest workers `fleet run` starts, on one shared subscription.
    ingest_workers: int = 1

    def retention(self) -> dict[str, int]:
        """{table: days kept} for every table upkeep prunes by age (0 days: kept for ever)."""
        return {"status_log": self.status_log_days, "readings": self.readings_days,
                "receptions": self.readings_days, "senml_seen": self.readings_days,
                "events": self.events_days,
                "bad_frames": self.bad_frames_days, "provider_downlinks": DOWNLINK_LOG_DAYS}

    @property
    def db_path(self) -> Path | str:
        """What store.base.connect() opens: the DATABASE_URL, else the SQLite file in DATA_DIR."""
        return self.database_url or self.data_dir / "fleet.db"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def broker_port_file(self) -> Path:
        """Where `fleet run` records the port its broker listens on, for the CLI and `make sim`."""
        return self.broker_dir / "port"

    def mqtt_target(self) -> tuple[str, int, str | None, str | None]:
        """(host, port, username, password) of the broker the fleet talks to."""
        if not self.mqtt_url:
            return "127.0.0.1", self.mqtt_port, None, None
        parts = urlsplit(self.mqtt_url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise SettingsError(
                f"MQTT_URL={self.mqtt_url!r}: expected mqtt://[user:password@]host[:port]"
            )
        return parts.hostname, parts.port or 1883, parts.username, parts.password

    def mqtt_login(self, service: str) -> tuple[str, int, str | None, str | None]:
        """mqtt_target() with the service account's login ("ingest", "fleet") on our own broker.

        With MQTT_URL the login in the URL is used as given.
        """
        host, port, user, password = self.mqtt_target()
        if self.mqtt_url:
            return host, port, user, password
        login = service_login(self.broker_dir, service)
        return (host, port) + (login if login else (None, None))


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a port number") from None
    if not 0 < value < 65536:
        raise SettingsError(f"{name}={value} is outside 1..65535")
    return value


DEFAULT_MQTT_PORT = 1883


def _number(name: str, default, lo, hi, kind=int):
    """An integer (or, with kind=float, a number) setting within lo..hi."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a{'n integer' if kind is int else ' number'}"
                            ) from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={raw} is outside {lo}..{hi}")
    return value


def _recorded_port(path: Path) -> int | None:
    """The broker port a `fleet run` on this data directory recorded, if any and well-formed."""
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() and 0 < int(raw) < 65536 else None


def _database_url() -> str | None:
    raw = os.environ.get("DATABASE_URL") or None
    if raw is not None and not raw.startswith(("postgresql://", "postgres://")):
        scheme = raw.split(":")[0]
        raise SettingsError(f"DATABASE_URL must start with postgresql:// (got {scheme}:...)")
    return raw


def from_env() -> Settings:
    """Read DATA_DIR, DATABASE_URL, PORT, MQTT_*, retention days, UPKEEP_EVERY; raise if bad.

    Without MQTT_PORT the broker port is the one `fleet run` recorded in DATA_DIR/broker/port
    (it moves off 1883 when a system broker holds it), else 1883.
    """
    data_dir = Path(os.environ.get("DATA_DIR") or "var").resolve()
    chosen = bool(os.environ.get("MQTT_PORT"))
    settings = Settings(
        data_dir=data_dir,
        port=_port("PORT", 8000),
        mqtt_port=_port("MQTT_PORT", DEFAULT_MQTT_PORT),
        mqtt_url=os.environ.get("MQTT_URL") or None,
        mqtt_port_chosen=chosen,
        status_log_days=_number("STATUS_LOG_DAYS", DEFAULT_STATUS_LOG_DAYS, 0, 36500),
        readings_days=_number("READINGS_DAYS", 0, 0, 36500),
        events_days=_number("EVENTS_DAYS", 0, 0, 36500),
        bad_frames_days=_number("BAD_FRAMES_DAYS", DEFAULT_BAD_FRAMES_DAYS, 0, 36500),
        upkeep_every=_number("UPKEEP_EVERY", DEFAULT_UPKEEP_EVERY, 0.1, 3600, float),
        database_url=_database_url(),
        ingest_workers=_number("INGEST_WORKERS", 1, 1, 64),
    )
    if not chosen:
        recorded = _recorded_port(settings.broker_port_file)
        if recorded:
            settings = replace(settings, mqtt_port=recorded)
    return settings


# --- Web: HTTPS, trusted reverse proxies, cookies (issue 14, the web half) ---------------------
# Read separately from from_env() so the web server, `fleet doctor` and the app factory ask for
# them only where they matter, and the TLS settings of the broker and nodes stay apart.

@dataclass(frozen=True)
class WebSettings:
    # Address the web UI listens on. Loopback unless a certificate is given: nothing listens on
    # the network without TLS.
    host: str = "127.0.0.1"
    # PEM certificate (chain) and private key: the web UI then serves HTTPS itself.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Addresses (or networks) of reverse proxies whose X-Forwarded-For/-Proto/-Host we believe.
    trusted_proxies: tuple = ()

    @property
    def https(self) -> bool:
        """True when browsers reach the UI over HTTPS: served directly, or by a trusted proxy."""
        return self.tls_cert is not None or bool(self.trusted_proxies)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web_from_env() -> WebSettings:
    """Read WEB_HOST, WEB_TLS_CERT, WEB_TLS_KEY, TRUSTED_PROXIES; raise SettingsError if bad."""
    import ipaddress

    host = os.environ.get("WEB_HOST") or "127.0.0.1"
    cert = os.environ.get("WEB_TLS_CERT") or None
    key = os.environ.get("WEB_TLS_KEY") or None
    if bool(cert) != bool(key):
        raise SettingsError("WEB_TLS_CERT and WEB_TLS_KEY go together: give both or neither")
    for name, value in (("WEB_TLS_CERT", cert), ("WEB_TLS_KEY", key)):
        if value and not Path(value).is_file():
            raise SettingsError(f"{name}={value!r}: no such file")
    if not cert and not _is_loopback(host):
        raise SettingsError(f"WEB_HOST={host!r} is not a loopback address: serving the web UI on "
                            "the network needs WEB_TLS_CERT and WEB_TLS_KEY (or keep it on "
                            "127.0.0.1 behind a reverse proxy, see docs/operations.md)")
    proxies = []
    for raw in (os.environ.get("TRUSTED_PROXIES") or "").split(","):
        if raw.strip():
            try:
                proxies.append(ipaddress.ip_network(raw.strip(), strict=False))
            except ValueError:
                raise SettingsError(f"TRUSTED_PROXIES: {raw.strip()!r} is not an IP address "
                                    "or network (e.g. 127.0.0.1 or 10.0.0.0/24)") from None
    return WebSettings(host=host, tls_cert=Path(cert).resolve() if cert else None,
                       tls_key=Path(key).resolve() if key else None,
                       trusted_proxies=tuple(proxies))


# --- Serving nodes over TLS (issue 14, the broker/node half; docs/operations.md) ---------------
# Read apart from from_env(): only `fleet run`, `fleet tls`, provisioning and the doctor need them.
DEFAULT_MQTT_TLS_PORT = 8883


@dataclass(frozen=True)
class NodeTLSSettings:
    # The certificates (fleet/tls/certs.py): made by `fleet tls init` or given by `fleet tls use`.
    tls_dir: Path
    # Where the broker's MQTT-over-TLS listener binds: nodes reach it there. The plain listener
    # stays on 127.0.0.1 for the fleet's own workers whatever this says.
    mqtt_tls_host: str = "0.0.0.0"
    mqtt_tls_port: int = DEFAULT_MQTT_TLS_PORT
    # The base URL nodes fetch OTA files from (the web server's /ota/v1, served over HTTPS
    # directly or by a reverse proxy). With TLS set up `fleet run` refuses anything but https://.
    ota_url: str | None = None

    def check_ota_url(self) -> None:
        """Raise SettingsError unless OTA_URL is https://: nodes on the network never use HTTP."""
        if not (self.ota_url or "").startswith("https://"):
            raise SettingsError(
                f"OTA_URL={self.ota_url or ''!r}: nodes are served over TLS, so they fetch updates "
                "over HTTPS only; set OTA_URL=https://NAME:PORT, the web server's address as "
                "nodes reach it (docs/operations.md, Serving nodes over TLS)")


def node_tls_from_env(data_dir: Path) -> NodeTLSSettings:
    """Read TLS_DIR, MQTT_TLS_HOST, MQTT_TLS_PORT, OTA_URL; raise SettingsError if bad."""
    import ipaddress

    host = os.environ.get("MQTT_TLS_HOST") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SettingsError(f"MQTT_TLS_HOST={host!r} is not an IP address to listen on "
                            "(0.0.0.0 for every interface)") from None
    ota_url = os.environ.get("OTA_URL") or None
    return NodeTLSSettings(
        tls_dir=Path(os.environ.get("TLS_DIR") or Path(data_dir) / "tls").resolve(),
        mqtt_tls_host=host,
        mqtt_tls_port=_port("MQTT_TLS_PORT", DEFAULT_MQTT_TLS_PORT),
        ota_url=ota_url,
    )
