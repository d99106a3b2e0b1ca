"""Fixtures for every test: a real mosquitto on a free port, free ports, an artifacts folder."""

import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.broker import MosquittoBroker, find_mosquitto

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mosquitto(broker_dir: Path,
                    config: Callable[[int], str] | None = None) -> MosquittoBroker:
    """A started mosquitto on a free port with the project's config, or config(port) if given."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; `.ci/run` installs it (apt-get install mosquitto)")
    # Another process may grab the free port between our check and mosquitto's bind: try again.
    for attempt in range(5):
        port = free_port()
        broker = MosquittoBroker(port, broker_dir, config_text=config(port) if config else None)
        try:
            return broker.start()
        except Exception:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def mosquitto(tmp_path):
    """A real mosquitto with the project's config, for one test.

    Attributes: .host, .port, .url; .stop() and .start() restart it on the same port with its
    persistence kept (for outage tests); .kill() stops it without saving, as a crash would.
    """
    broker = start_mosquitto(tmp_path / "broker")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory):
    """One mosquitto shared by every test that asks for it; do not stop it in a test."""
    broker = start_mosquitto(tmp_path_factory.mktemp("broker"))
    yield broker
    broker.stop()


@pytest.fixture
def artifacts(request) -> Path:
    """A folder under test-artifacts/ named after the test, for screenshots and logs to keep."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    path = ARTIFACTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path
