"""Settings shared by the server, the CLI and the simulator, read from the environment."""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting in the environment is malformed."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    port: int
    mqtt_port: int
    mqtt_url: str | None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "fleet.db"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

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
        from .brokerauth import service_login

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


def from_env() -> Settings:
    """Read DATA_DIR, PORT, MQTT_PORT and MQTT_URL; raise SettingsError on a bad value."""
    return Settings(
        data_dir=Path(os.environ.get("DATA_DIR") or "var").resolve(),
        port=_port("PORT", 8000),
        mqtt_port=_port("MQTT_PORT", 1883),
        mqtt_url=os.environ.get("MQTT_URL") or None,
    )
