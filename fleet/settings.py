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
                "receptions": self.readings_days, "events": self.events_days,
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
