"""Make the running broker take a new certificate after `fleet tls init/use/renew`, no restart.

mosquitto re-reads the certfile and keyfile of its listeners on SIGHUP (its ChangeLog: "TLS
certificates for the server are now reloaded on SIGHUP"; checked with mosquitto 2.0.11 in
tests/e2e/test_tls_renewal.py), the same signal that reloads its logins (fleet/broker/auth.py),
so connected nodes stay connected and the next handshake gets the new certificate. It cannot add
a listener: a broker started before TLS was set up needs a restart of `fleet run` to open 8883.
The web server (fleet/web/https.py) notices new files by itself.
"""

import os
from pathlib import Path

from fleet.broker import auth as broker_auth

CONFIG_FILE = "mosquitto.conf"  # written by fleet/broker/server.py at every start of the broker


def serves_from(broker_dir: Path, certfile: Path) -> bool:
    """True when the broker's current config has a TLS listener reading certfile."""
    try:
        config = (Path(broker_dir) / CONFIG_FILE).read_text()
    except OSError:
        return False
    return f"certfile {certfile}" in config.splitlines()


def broker_running(broker_dir: Path) -> bool:
    """True when the broker the fleet started with broker_dir (its pid file) is alive."""
    try:
        pid = int((Path(broker_dir) / broker_auth.PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def reload_broker(broker_dir: Path, certfile: Path) -> str:
    """Signal the running broker to load certfile again; plain words saying what happened."""
    if not broker_running(broker_dir):
        return "no broker is running: `fleet run` serves this certificate when it starts"
    if not serves_from(broker_dir, certfile):
        return ("the running broker has no TLS listener yet: restart `fleet run` (`sudo "
                "systemctl restart polylink`) to serve nodes over TLS")
    if not broker_auth.reload_broker(broker_dir):
        return "no broker is running: `fleet run` serves this certificate when it starts"
    return "the running broker reloaded the certificate (SIGHUP); connected nodes stay connected"
