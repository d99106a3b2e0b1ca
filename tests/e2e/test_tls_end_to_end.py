"""End to end over TLS: `fleet tls init`, `fleet run` serving nodes on mosquitto's TLS listener,
20 real firmware nodes (host port, CPython `ssl`) that trust only the fleet's CA, send telemetry,
take a command and an OTA update fetched over HTTPS; nothing of the running fleet listens on the
network without TLS.

The web UI, the API and the OTA files are served over HTTPS by `fleet run` itself (cheroot, with
WEB_TLS_CERT) on the network too, with the certificate `fleet tls init` made.
"""

import json
import os

import pytest
from polylink.ota import slots
from polylink_host import sim
from polylink_host.hal import HostHAL
from services import READY, FleetRun, free_port
from test_end_to_end import Api, SimFleet, create_token, wait_until
from test_ota_end_to_end import fleet_cli
from tls_helpers import plain_network_listeners

from fleet.tls import certs

NODES = 20


@pytest.fixture
def tls_fleet(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    fleet_cli(data, "keys", "create", "k1")
    out = fleet_cli(data, "tls", "init", "--name", "localhost", "--name", "127.0.0.1")
    assert "server" in out and "127.0.0.1" in out, out
    web_port, tls_port = free_port(), free_port()
    monkeypatch.setenv("MQTT_TLS_PORT", str(tls_port))
    monkeypatch.setenv("MQTT_TLS_HOST", "0.0.0.0")  # on the network, as in production
    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("WEB_TLS_CERT", str(data / "tls" / "server.pem"))
    monkeypatch.setenv("WEB_TLS_KEY", str(data / "tls" / "server.key"))
    monkeypatch.setenv("OTA_URL", f"https://127.0.0.1:{web_port}")
    monkeypatch.delenv("TLS_DIR", raising=False)
    run = FleetRun(data, web_port, free_port())
    # This test's API calls (urllib) trust the fleet's CA, as a browser given it would.
    monkeypatch.setenv("SSL_CERT_FILE", str(data / "tls" / "ca.pem"))
    try:
        run.wait_for(READY, timeout=60)
        run.tls_port = tls_port
        yield run
    finally:
        if run.proc.poll() is None:
            run.stop()


def count_tls_sockets(monkeypatch) -> dict[str, int]:
    """{node: the most TLS sockets it held open at once}, seen at each connection it opens."""
    peak: dict[str, int] = {}
    original = HostHAL.open_connection

    async def open_connection(self, host, port, tls=None):
        r, w = await original(self, host, port, tls)
        live = [x for x in self._writers
                if not x.transport.is_closing() and x.get_extra_info("ssl_object") is not None]
        peak[self.node] = max(peak.get(self.node, 0), len(live))
        return r, w

    monkeypatch.setattr(HostHAL, "open_connection", open_connection)
    return peak


def test_twenty_nodes_over_tls_telemetry_command_and_ota_over_https(tmp_path, tls_fleet,
                                                                   monkeypatch):
    data = tmp_path / "data"
    peak = count_tls_sockets(monkeypatch)
    assert f"MQTT over TLS on mqtt+ssl://0.0.0.0:{tls_fleet.tls_port}" in tls_fleet.output()

    # Nothing of the running fleet listens beyond loopback without TLS; the broker's TLS listener
    # and the HTTPS web server (UI, API, OTA files) do.
    ca_file = data / "tls" / "ca.pem"
    assert plain_network_listeners(tls_fleet.proc.pid, ca_file) == []
    import psutil

    tree = [psutil.Process(tls_fleet.proc.pid)] + psutil.Process(
        tls_fleet.proc.pid).children(recursive=True)
    open_to_network = {c.laddr.port for p in tree for c in p.net_connections("inet")
                       if c.status == psutil.CONN_LISTEN and not c.laddr.ip.startswith("127.")}
    assert open_to_network == {tls_fleet.tls_port, tls_fleet.port}, open_to_network

    api = Api(f"https://127.0.0.1:{tls_fleet.port}/api/v1", create_token(data))
    ids = sim.node_ids("tls", NODES)
    nodes_dir = tmp_path / "nodes"
    logins = sim.fleet_logins(ids, nodes_dir, dict(os.environ, DATA_DIR=str(data)))
    keys = json.loads((data / "ota" / "trusted_keys.json").read_text())
    nodes = SimFleet(ids, nodes_dir, "127.0.0.1", tls_fleet.tls_port)
    ca = ca_file.read_bytes()
    for node in ids:  # what a provisioned image holds: login, CA, update keys, HTTPS OTA URL
        sim.write_config(nodes_dir / "sim" / node, node, "127.0.0.1", tls_fleet.tls_port,
                         *logins[node], interval=2, status_interval=10, ca=ca,
                         ota={"keys": keys, "url": os.environ["OTA_URL"], "confirm": 2})
    fleet_cli(data, "release", "build", "0.2.0", "--key", "k1")
    nodes.start()
    try:
        def all_online_with_telemetry():
            listed = {n["id"]: n for n in api.get("/nodes")["nodes"]}
            if not all(listed.get(i, {}).get("online") for i in ids):
                return None
            return all(api.get(f"/nodes/{i}/telemetry") for i in ids)

        wait_until("20 nodes online over TLS with telemetry", all_online_with_telemetry, 60)
        assert all(n.node.link.connects >= 1 and n.node.cfg.mqtt_tls for n in nodes.nodes)

        target = nodes.node(ids[3])
        toggles = target.hal.led_toggles
        status, body = api.call("POST", f"/nodes/{ids[3]}/commands", {"command": "identify"})
        assert status == 202, body
        path = body["url"].removeprefix("/api/v1")
        done = wait_until("the identify result", lambda: (
            lambda c: c if c["state"] in ("done", "failed") else None)(api.get(path)), 20)
        assert done["state"] == "done", done
        assert target.hal.led_toggles > toggles, "the node never blinked its LED"

        status, r = api.call("POST", "/rollouts", {
            "release": "0.2.0", "target": {"nodes": ids}, "stages": [{"percent": 100, "soak": 0}]})
        assert status == 201, r
        rid = r["id"]
        wait_until("the rollout over HTTPS done",
                   lambda: api.get(f"/rollouts/{rid}")["state"] == "done", 240, every=1)
        assert api.get(f"/rollouts/{rid}")["totals"] == {"succeeded": NODES}
        for n in nodes.nodes:
            st = slots.read(str(n.root))
            assert (st["version"], st["trial"]) == ("0.2.0", 0), (n.id, st)
        # No node ever held two TLS sockets: MQTT gave its socket up for the downloads.
        assert peak and set(peak) == set(ids) and max(peak.values()) == 1, peak
    finally:
        nodes.stop()
    assert certs.certificates(data / "tls")[0]["names"] == ["localhost", "127.0.0.1"]
