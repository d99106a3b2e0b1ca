"""fleet.mqtt.publish_once, which every downlink from the web goes through: a broker that
drops the connection is an OSError saying so (the API's 503), never paho's bare RuntimeError
(a 500 with no reason: seen while the broker reloaded its logins)."""

import socket
import threading

import pytest

from fleet import mqtt


def test_a_broker_that_drops_the_connection_is_not_acknowledged_with_the_reason():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def drop_every_connection():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed at the end of the test
            conn.recv(256)  # the CONNECT
            conn.close()

    threading.Thread(target=drop_every_connection, daemon=True).start()
    try:
        # paho either fails the message at once (the connection is gone) or, when the drop
        # comes after it queued the message, keeps it for a reconnect until the timeout: an
        # OSError saying which, either way; never its RuntimeError.
        with pytest.raises(mqtt.NotAcknowledged,
                           match="not currently connected|no acknowledgement within"):
            mqtt.publish_once("127.0.0.1", server.getsockname()[1], "pl/v1/n1/down", b"x",
                              timeout=5)
    finally:
        server.close()


def test_a_port_nobody_listens_on_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed
    with pytest.raises(mqtt.Unreachable):
        mqtt.publish_once("127.0.0.1", port, "pl/v1/n1/down", b"x", timeout=2)
