"""Readings as SenML on pl/v1/data/{node} at a real mosquitto with the fleet's logins and ACLs:
integrators read only their nodes and publish nowhere; nodes cannot forge exported data."""

import json
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import free_port
from test_webhook_delivery import ingest, wait_for

from fleet.broker.server import MosquittoBroker, find_mosquitto
from fleet.exports import readers, registry, worker
from fleet.exports.adapter import ExportError
from fleet.identity import provision
from fleet.identity.provision import ProvisionError
from fleet.settings import Settings
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store.migrate import open_db
from fleet.store.scope import EVERYTHING, set_scope


class Subscriber:
    def __init__(self, port, user, password, topic="pl/v1/data/+"):
        self.messages = []
        self.connack = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311)
        self.c.username_pw_set(user, password)
        self.c.on_connect = lambda c, u, f, rc, p: (setattr(self, "connack", rc),
                                                    c.subscribe(topic, 1))
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert wait_for(lambda: self.connack is not None, 5)

    def records(self):
        out = []
        for topic, pack in self.messages:
            bn, bt = "", 0
            for r in pack:
                bn, bt = r.get("bn", bn), r.get("bt", bt)
                out.append((topic, bn + r["n"], round(bt + r.get("t", 0), 6), r["v"]))
        return out

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def fleet(tmp_path):
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; `.ci/run` installs it")
    settings = Settings(data_dir=tmp_path, port=free_port(), mqtt_port=free_port(), mqtt_url=None,
                        database_url=os.environ.get("DATABASE_URL"))
    db = open_db(settings.db_path)
    ids = {n: provision.register(db, settings, n, board="ESP32_GENERIC") for n in ("n1", "n2")}
    broker = MosquittoBroker(settings.mqtt_port, settings.broker_dir, auth=True).start()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(settings, stop),
                              kwargs={"batch": 40, "max_backoff": 0.5}, daemon=True)
    subs = []

    def subscribe(*args, **kw):
        s = Subscriber(settings.mqtt_port, *args, **kw)
        subs.append(s)
        return s

    yield settings, db, ids, broker, thread, subscribe
    stop.set()
    if thread.is_alive():
        thread.join(30)
    for s in subs:
        s.close()
    broker.stop()


@pytest.mark.mosquitto
def test_readers_get_each_reading_of_their_nodes_only(fleet):
    settings, db, ids, broker, thread, subscribe = fleet
    node_store.tag_nodes(db, ["n2"], "park")
    everything = readers.add(db, settings.broker_dir, "grafana")
    park = readers.add(db, settings.broker_dir, "parks", tags=["park"])
    assert everything["username"] == "polylink-reader-grafana"
    assert [r["topics"] for r in readers.list_all(db)] == [["pl/v1/data/+"], ["pl/v1/data/n2"]]
    time.sleep(0.3)  # mosquitto re-reads its files on SIGHUP
    all_sub = subscribe(everything["username"], everything["password"])
    park_sub = subscribe(park["username"], park["password"])  # asks for +, gets n2 only
    registry.add(db, settings.data_dir, {"name": "stream", "kind": "mqtt", "url": "fleet"}, None)
    time.sleep(0.3)
    thread.start()
    ingest(db, "n1", 1, 30)
    ingest(db, "n2", 1, 30)
    assert wait_for(lambda: len(all_sub.records()) == 120)
    assert wait_for(lambda: len(park_sub.records()) == 60)
    time.sleep(0.5)
    recs = all_sub.records()
    assert len({(n, t) for _, n, t, _ in recs}) == 120  # each reading once
    assert {topic for topic, *_ in park_sub.records()} == {"pl/v1/data/n2"}
    n1_temps = [t for topic, n, t, _ in recs if n == "urn:dev:polylink:n1:temperature"]
    assert n1_temps == sorted(n1_temps) and len(n1_temps) == 30
    assert ("pl/v1/data/n1", "urn:dev:polylink:n1:humidity", 1_700_000_001.0, 50) in recs
    assert wait_for(lambda: registry.get(db, "stream")["delivered"] == 120)


@pytest.mark.mosquitto
def test_an_organisations_reader_gets_only_the_nodes_its_organisation_may_read(fleet):
    """Issue 18 at the real broker: a login made in another organisation with no selection
    reads that organisation's nodes only, a node it names but may not read gives it nothing,
    and the platform's logins and listing are not its to see."""
    settings, db, ids, broker, thread, subscribe = fleet
    orgs.add_organisation(db, "parking")
    orgs.move_node(db, "n2", "parking")
    grafana = readers.add(db, settings.broker_dir, "grafana")  # the platform's: every node
    set_scope(db, orgs.scope_for(db, orgs.get_organisation(db, "parking")["id"]))
    park = readers.add(db, settings.broker_dir, "park-all")
    sneaky = readers.add(db, settings.broker_dir, "park-sneaky", nodes=["n1"])
    assert {r["name"]: r["topics"] for r in readers.list_all(db)} == {
        "park-all": ["pl/v1/data/n2"], "park-sneaky": []}
    with pytest.raises(KeyError):
        readers.remove(db, settings.broker_dir, "grafana")  # not parking's to remove
    set_scope(db, EVERYTHING)
    with pytest.raises(ExportError, match="taken"):
        readers.add(db, settings.broker_dir, "park-all")  # the platform cannot take it over
    time.sleep(0.3)  # mosquitto re-reads its files on SIGHUP
    all_sub = subscribe(grafana["username"], grafana["password"])
    park_sub = subscribe(park["username"], park["password"])
    sneaky_sub = subscribe(sneaky["username"], sneaky["password"])
    registry.add(db, settings.data_dir, {"name": "stream", "kind": "mqtt", "url": "fleet"}, None)
    time.sleep(0.3)
    thread.start()
    ingest(db, "n1", 1, 10)
    ingest(db, "n2", 1, 10)
    assert wait_for(lambda: len(all_sub.records()) == 40)
    assert wait_for(lambda: len(park_sub.records()) == 20)
    time.sleep(0.5)
    assert {topic for topic, *_ in park_sub.records()} == {"pl/v1/data/n2"}
    assert sneaky_sub.records() == []


@pytest.mark.mosquitto
def test_a_reader_cannot_publish_and_a_node_cannot_forge_data(fleet):
    settings, db, ids, broker, thread, subscribe = fleet
    r = readers.add(db, settings.broker_dir, "nodered")
    time.sleep(0.3)
    sub = subscribe(r["username"], r["password"])
    forger = Subscriber(settings.mqtt_port, "n1", ids["n1"]["mqtt"]["password"], "pl/v1/none")
    forger.c.publish("pl/v1/data/n2", b'[{"n":"temperature","v":99}]', 1).wait_for_publish(5)
    sub.c.publish("pl/v1/data/n2", b'[{"n":"temperature","v":98}]', 1).wait_for_publish(5)
    time.sleep(0.5)
    forger.close()
    assert sub.messages == []  # mosquitto dropped both (ACL), nothing reached the reader
    with pytest.raises(ProvisionError, match="reserved"):
        provision.register(db, settings, "data", board="ESP32_GENERIC")
    bad = Subscriber(settings.mqtt_port, r["username"], "wrong-password")
    assert bad.connack.is_failure
    bad.close()
    readers.remove(db, settings.broker_dir, "nodered")
    assert readers.list_all(db) == []


@pytest.mark.mosquitto
def test_the_broker_stopped_and_started_again_gets_what_it_missed(fleet):
    settings, db, ids, broker, thread, subscribe = fleet
    r = readers.add(db, settings.broker_dir, "grafana")
    time.sleep(0.3)
    registry.add(db, settings.data_dir, {"name": "stream", "kind": "mqtt", "url": "fleet"}, None)
    thread.start()
    ingest(db, "n1", 1, 10)
    assert wait_for(lambda: registry.get(db, "stream")["delivered"] == 20)
    broker.stop()
    ingest(db, "n1", 11, 10)
    assert wait_for(lambda: registry.get(db, "stream")["state"] == "down")
    assert "broker" in registry.get(db, "stream")["last_error"]
    broker.start()
    sub = subscribe(r["username"], r["password"])  # a clean session: sees what comes now
    assert wait_for(lambda: registry.get(db, "stream")["delivered"] == 40, 30)
    assert wait_for(lambda: len(sub.records()) == 20)
    times = sorted({t for _, n, t, _ in sub.records()})
    assert times == [1_700_000_000.0 + s for s in range(11, 21)]


@pytest.mark.mosquitto
def test_a_node_with_more_in_a_batch_than_one_message_carries_goes_out_in_several(fleet):
    """The broker disconnects a client whose packet exceeds its max_packet_size (4 KB): one
    node's 600 readings in a batch of 2,000 go out as several packs, each under the limit,
    every reading once and in order, instead of a batch that never gets through."""
    settings, db, ids, broker, _thread, subscribe = fleet
    r = readers.add(db, settings.broker_dir, "grafana")
    time.sleep(0.3)
    sub = subscribe(r["username"], r["password"])
    registry.add(db, settings.data_dir, {"name": "stream", "kind": "mqtt", "url": "fleet"}, None)
    ingest(db, "n1", 1, 300)
    stop = threading.Event()
    big = threading.Thread(target=worker.run, args=(settings, stop),
                           kwargs={"batch": 2000, "max_backoff": 0.5}, daemon=True)
    big.start()
    try:
        assert wait_for(lambda: registry.get(db, "stream")["delivered"] == 600, 30), \
            registry.get(db, "stream")["last_error"]
        assert wait_for(lambda: len(sub.records()) == 600)
    finally:
        stop.set()
        big.join(30)
    assert len(sub.messages) > 1
    assert all(len(json.dumps(pack, separators=(",", ":"))) < 4096 for _, pack in sub.messages)
    temps = [t for _, n, t, _ in sub.records() if n == "urn:dev:polylink:n1:temperature"]
    assert temps == [1_700_000_000.0 + s for s in range(1, 301)]
