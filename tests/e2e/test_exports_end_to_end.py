"""End to end: simulated firmware nodes (WiFi, and one LoRaWAN node through the network-server
emulator as The Things Stack) -> mosquitto -> `fleet run` (ingest and export workers)
-> a webhook receiver, a (simulated, CIM 009) NGSI-LD broker and an MQTT subscriber. Each
destination is stopped for a while and started again; afterwards each has every stored reading
exactly once, and the webhook got each node's readings in order."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from polylink_host import sim
from polylink_host.nsemu import NetworkServer
from polylink_host.simradio import Gateway, Medium
from services import READY, FleetRun, free_port
from test_end_to_end import SimFleet, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet" / "exports"))
from export_receivers import WebhookReceiver  # noqa: E402
from ngsild_broker import NgsiLdBroker  # noqa: E402

from fleet.store import identity as identity_store  # noqa: E402
from fleet.store.base import connect  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lorawan"))
from test_e2e_lorawan import OTAA, lora_node  # noqa: E402

KEY = "e2e-hook-key"
CONTEXT = "https://fleet.example/static/ngsi-ld-context.jsonld"
NODES = 5


def cli(data_dir, *args, stdin=""):
    r = subprocess.run([sys.executable, "-m", "fleet.cli", *args], input=stdin, text=True,
                       env=dict(os.environ, DATA_DIR=str(data_dir)), capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


class Subscriber:
    """An MQTT integrator with a persistent session (QoS 1): offline, the broker keeps its
    messages; it counts every SenML record by (name, time)."""

    def __init__(self, port, client_id="e2e-integrator", clean_session=False):
        self.port = port
        self.counts: dict[tuple, int] = {}
        self.order: list[tuple] = []  # (name, time) in arrival order
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean_session)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("pl/v1/data/+", 1)
        self.c.on_message = self.on_message

    def on_message(self, c, u, m):
        bn = bt = None
        with self.lock:
            for r in json.loads(m.payload):
                bn, bt = r.get("bn", bn), r.get("bt", bt)
                key = (bn + r["n"], round(bt + r.get("t", 0), 6))
                self.counts[key] = self.counts.get(key, 0) + 1
                self.order.append(key)

    def start(self):
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        return self

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def stored(db_path) -> tuple[set[tuple], set[tuple]]:
    """(SenML name, time) of every stored reading, and of every stored event.

    The events apart: the webhook and MQTT get them as SenML records ("event/<code>"), NGSI-LD
    as the Device's deviceState. A simulated node sends one now and then on a loaded machine (a
    sensor read that failed, a restart after its watchdog)."""
    from fleet.nodes.senml import name_and_unit

    db = connect(db_path)
    try:
        rows = db.conn.execute("SELECT node_id, qid, inst, t FROM readings").fetchall()
        events = db.conn.execute("SELECT node_id, code, t FROM events").fetchall()
    finally:
        db.conn.close()
    return ({(f"urn:dev:polylink:{n}:{name_and_unit(q, i)[0]}", round(t, 6))
             for n, q, i, t in rows},
            {(f"urn:dev:polylink:{n}:event/{c}", round(t, 6)) for n, c, t in events})


def test_every_reading_reaches_every_destination_once_across_outages(tmp_path, mosquitto,
                                                                     database_url):
    data_dir = tmp_path / "data"
    store = database_url or data_dir / "fleet.db"  # the fleet's store on this run's backend
    hook_port = free_port()
    hook = WebhookReceiver(KEY, port=hook_port).__enter__()
    broker = NgsiLdBroker().__enter__()
    sub = Subscriber(mosquitto.port).start()
    # Connected throughout: it sees each publication once, so it counts the exporter's sends
    # apart from QoS 1 redeliveries to `sub` when its session resumes (MQTT allows those).
    watcher = Subscriber(mosquitto.port, "e2e-watcher", clean_session=True).start()
    run = FleetRun(data_dir, free_port(), free_port(), mqtt_url=mosquitto.url)
    nodes = tts = None
    try:
        run.wait_for(READY, timeout=60)
        cli(data_dir, "export", "add", "hook", "--kind", "webhook", "--url", hook.url,
            "--secret-stdin", stdin=KEY + "\n")
        cli(data_dir, "export", "add", "city", "--kind", "ngsi-ld", "--url", broker.url,
            "--option", f"context={CONTEXT}", "--no-secret")
        cli(data_dir, "export", "add", "stream", "--kind", "mqtt", "--url", "fleet",
            "--no-secret")
        # One LoRaWAN node through the provider emulator (The Things Stack flavour).
        cli(data_dir, "provider", "add", "ttn", "--kind", "tts", "--host", mosquitto.host,
            "--port", str(mosquitto.port), "--application", "city", "--no-password")
        db = connect(store)
        identity_store.register_node(db, "lw-exp", {"mqtt_user": "lw-exp", "mqtt_hash": "x",
                                                    "dev_eui": OTAA["dev_eui"]})
        db.conn.close()
        medium = Medium()
        tts = NetworkServer("tts", mosquitto.host, mosquitto.port, "city",
                            gateways=[Gateway(medium, "eui-aa555a0000000101", (0, 0))])
        tts.register_otaa(OTAA["dev_eui"], OTAA["app_key"], device_id="lw-exp")
        nodes = SimFleet(sim.node_ids("exp", NODES), tmp_path / "nodes", mosquitto.host,
                         mosquitto.port)
        nodes.nodes.append(lora_node(tmp_path / "lora", mosquitto, "lw-exp", OTAA, "lorawan",
                                     medium, (200, 0), interval=2))
        time.sleep(6)  # the provider worker reloads its providers every 5 s
        nodes.start()
        wait_until("first readings at the webhook", lambda: len(hook.records) >= 20, 60)
        wait_until("a LoRaWAN reading at the webhook",
                   lambda: any(":lw-exp:" in name for name, _t in hook.records), 60)
        # All three destinations go away for a while; the nodes keep sending.
        hook.__exit__()
        before, order_before = dict(hook.records), list(hook.order)
        broker.down = True
        sub.stop()
        time.sleep(8)
        listed = cli(data_dir, "export", "list")
        assert "hook" in listed and "down" in listed, listed
        hook = WebhookReceiver(KEY, port=hook_port).__enter__()
        broker.down = False
        sub.start()
        time.sleep(4)
        nodes.stop()
        nodes = None
        time.sleep(2)  # the last frames reach the store

        def caught_up():
            out = cli(data_dir, "export", "list")
            return out if out.count("up to date") == 3 else None

        wait_until("all three destinations up to date", caught_up, 90)
        readings, events = stored(store)
        want = readings | events  # what the webhook and MQTT carry
        assert len(readings) > 100
        assert any(":lw-exp:" in name for name, _t in want)
        # Webhook: before and after the outage together hold every reading; only a batch that
        # was in flight when the receiver went away may have come twice (same name and time).
        assert set(before) | set(hook.records) == want
        assert len(set(before) & set(hook.records)) <= 500 and hook.dupes == 0
        assert hook.bad_signatures == 0
        for node in sim.node_ids("exp", NODES):
            times = [t for name, t in order_before + hook.order if f":{node}:temp" in name]
            assert times == sorted(times), f"{node}: readings out of order"
        # MQTT: the exporter published each reading once; the integrator that was away got
        # every one through its persistent session (a resumed session may redeliver: QoS 1).
        wait_until("the MQTT watcher has every reading", lambda: set(watcher.counts) == want, 30)
        assert max(watcher.counts.values()) == 1
        for node in [*sim.node_ids("exp", NODES), "lw-exp"]:
            times = [t for name, t in watcher.order if f":{node}:temp" in name]
            assert times == sorted(times), f"{node}: MQTT readings out of order"
        wait_until("the MQTT integrator has every reading", lambda: set(sub.counts) == want, 30)
        # NGSI-LD: every observation attribute once (battery_level would go on the Device).
        inst = [i for i in broker.instances if ":Device:" not in i[0]]
        assert len(inst) == len(set(inst)) == len(readings)
        for node in sim.node_ids("exp", NODES):
            times = [at for eid, attr, at in inst if f":{node}:" in eid and attr == "temperature"]
            assert times == sorted(times), f"{node}: NGSI-LD observations out of order"
    finally:
        if nodes is not None:
            nodes.stop()
        if tts is not None:
            tts.close()
        run.stop()
        sub.stop()
        watcher.stop()
        hook.__exit__()
        broker.__exit__()
