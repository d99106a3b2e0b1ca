"""Rollback protection end to end: `fleet run`, releases built with mpy-cross and signed, and the
real agent on a host-port node over real HTTP and MQTT.

After the node confirmed 0.3.0, the older 0.2.0 (validly signed by the same key) is refused: the
fleet will not start a rollout of it, and offered to the node anyway (a replayed offer) the agent
refuses it before fetching a file and reports why; the node stays on 0.3.0. A downgrade the
operator signed for 0.3.0 (`--downgrade-from 0.3.0`) goes through.
"""

import json
import time

from polylink.ota import slots
from polylink_host import sim
from test_end_to_end import Api, SimFleet, create_token, wait_until
from test_ota_end_to_end import fleet, fleet_cli  # noqa: F401 - fleet is a fixture

NODE = "dg-0"


def test_an_older_signed_release_is_refused_and_a_signed_downgrade_is_not(tmp_path, fleet):  # noqa: F811
    data = tmp_path / "data"
    api = Api(f"http://127.0.0.1:{fleet.port}/api/v1", create_token(data))
    nodes = SimFleet([NODE], tmp_path / "nodes", "127.0.0.1", fleet.mqtt_port)
    ident = json.loads(fleet_cli(data, "node", "add", NODE, "--board", "ESP32_GENERIC",
                                 "--json"))
    url = f"http://127.0.0.1:{fleet.port}"
    sim.write_config(nodes.nodes[0].root, NODE, "127.0.0.1", fleet.mqtt_port, user=NODE,
                     password=ident["mqtt"]["password"], interval=5, status_interval=10,
                     ota=dict(ident["ota"], url=url, confirm=2))
    for version in ("0.2.0", "0.3.0"):
        fleet_cli(data, "release", "build", version)
    out = fleet_cli(data, "release", "build", "0.2.1", "--downgrade-from", "0.3.0")
    assert "a downgrade for nodes on 0.3.0" in out, out
    node = nodes.nodes[0]
    nodes.start()
    try:
        def runs(version):
            listed = {n["id"]: n for n in api.get("/nodes")["nodes"]}
            n = listed.get(NODE, {})
            return n.get("online") and n["firmware_version"] == version

        def rollout(version):
            return api.call("POST", "/rollouts", {"release": version, "target": {"nodes": [NODE]},
                                                  "stages": [{"percent": 100, "soak": 0}]})

        wait_until("the node online on 0.1.0", lambda: runs("0.1.0"), 30)
        status, r = rollout("0.3.0")
        assert status == 201, r
        wait_until("0.3.0 done", lambda: api.get(f"/rollouts/{r['id']}")["state"] == "done",
                   120, every=1)
        assert slots.read(str(node.root))["floor"] == "0.3.0"

        status, r = rollout("0.2.0")
        assert status == 400 and "older release" in r["error"], (status, r)
        assert "--downgrade-from 0.3.0" in r["error"], r

        # Offered anyway, as a replayed OTA_DOWN would: the real agent over real HTTP.
        offer = {"op": 1, "version": "0.2.0", "rid": None, "url": url}
        nodes.loop.call_soon_threadsafe(node.node.ota_agent().offer, offer)

        def refused():
            reps = api.get(f"/nodes/{NODE}/ota")["reports"]
            return [x for x in reps if x["version"] == "0.2.0" and x["state"] == "failed"]

        wait_until("the node reports the refusal", refused, 60, every=0.5)
        rep = refused()[0]
        assert rep["reason"] == "older than the node's version (no signed downgrade)", rep
        assert "older than 0.3.0" in rep["text"], rep
        time.sleep(3)  # nothing more happens: no switch, no reboot
        st = slots.read(str(node.root))
        assert (st["version"], st["trial"], st["floor"]) == ("0.3.0", 0, "0.3.0"), st
        for d in ("a", "b"):
            m = node.root / d / "manifest.json"
            assert not m.exists() or json.loads(m.read_text())["version"] != "0.2.0", d
        assert runs("0.3.0")

        # The operator's signed downgrade for 0.3.0 is rolled out and confirmed.
        status, r = rollout("0.2.1")
        assert status == 201, r
        wait_until("0.2.1 done", lambda: api.get(f"/rollouts/{r['id']}")["state"] == "done",
                   120, every=1)
        assert api.get(f"/rollouts/{r['id']}")["totals"] == {"succeeded": 1}
        st = slots.read(str(node.root))
        assert (st["version"], st["trial"], st["floor"]) == ("0.2.1", 0, "0.2.1"), st
    finally:
        nodes.stop()
