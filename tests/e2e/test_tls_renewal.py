"""`fleet tls renew` while the fleet runs (#14): the running mosquitto (SIGHUP, no restart) and the
HTTPS web server (it watches the files) serve the new certificate to the next client; a node
connected over TLS stays connected and keeps sending.
"""

import os
import socket
import ssl

from cryptography import x509
from polylink_host import sim
from test_end_to_end import Api, SimFleet, create_token, wait_until
from test_ota_end_to_end import fleet_cli
from test_tls_end_to_end import tls_fleet  # noqa: F401 -- the fixture

from fleet.broker import auth as broker_auth
from fleet.tls import certs


def served(port: int, ca_file) -> x509.Certificate:
    """The certificate a new TLS client on 127.0.0.1:port gets (verified against the CA)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def on_disk(data) -> x509.Certificate:
    return x509.load_pem_x509_certificates((data / "tls" / certs.SERVER_CERT).read_bytes())[0]


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path, tls_fleet):  # noqa: F811
    data = tmp_path / "data"
    ca_file = data / "tls" / certs.CA_FILE
    broker_pid = int((data / "broker" / broker_auth.PID_FILE).read_text())
    old = on_disk(data)
    assert served(tls_fleet.tls_port, ca_file).serial_number == old.serial_number
    assert served(tls_fleet.port, ca_file).serial_number == old.serial_number

    api = Api(f"https://127.0.0.1:{tls_fleet.port}/api/v1", create_token(data))
    node_id = "renew-0001"
    logins = sim.fleet_logins([node_id], tmp_path / "nodes", dict(os.environ, DATA_DIR=str(data)))
    nodes = SimFleet([node_id], tmp_path / "nodes", "127.0.0.1", tls_fleet.tls_port)
    sim.write_config(tmp_path / "nodes" / "sim" / node_id, node_id, "127.0.0.1",
                     tls_fleet.tls_port, *logins[node_id], interval=1, status_interval=10,
                     ca=ca_file.read_bytes())
    nodes.start()
    try:
        node = nodes.node(node_id)
        wait_until("the node online over TLS", lambda: node.node is not None and
                   node.node.link.connects == 1 and api.get(f"/nodes/{node_id}/telemetry"), 60)

        out = fleet_cli(data, "tls", "renew")
        assert "the running broker reloaded the certificate" in out, out
        new = on_disk(data)
        assert new.serial_number != old.serial_number
        assert new.not_valid_after_utc >= old.not_valid_after_utc
        # A new client of the broker gets the new certificate (SIGHUP is handled by mosquitto's
        # main loop, a moment after `fleet tls renew` returns).
        wait_until("the broker serving the renewed certificate", lambda: served(
            tls_fleet.tls_port, ca_file).serial_number == new.serial_number, 10)
        wait_until("the web server serving the renewed certificate", lambda: served(
            tls_fleet.port, ca_file).serial_number == new.serial_number, 15)
        # Neither was restarted: the same broker process, the same `fleet run`.
        assert int((data / "broker" / broker_auth.PID_FILE).read_text()) == broker_pid
        assert tls_fleet.proc.poll() is None
        assert "restarted" not in tls_fleet.output()
        # The node kept its connection and keeps sending.
        seen = api.get(f"/nodes/{node_id}")["last_seen"]
        wait_until("the node heard from after the renewal",
                   lambda: api.get(f"/nodes/{node_id}")["last_seen"] > seen, 20)
        assert node.node.link.connects == 1
    finally:
        nodes.stop()
