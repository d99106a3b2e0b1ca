"""Per-node logins at a real mosquitto: own topics only, strangers out, revocation at once."""

import json
import os
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import free_port

from fleet.broker import auth as brokerauth
from fleet.broker.server import MosquittoBroker, find_mosquitto
from fleet.identity import provision
from fleet.ingest import Ingest
from fleet.senml import intake
from fleet.settings import Settings
from fleet.store import identity as identity_store
from fleet.store import profiles as profile_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db


class Client:
    """A paho client that records what happens to it."""

    def __init__(self, port, user, password, client_id="c"):
        self.connack = None
        self.disconnects = []
        self.messages = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set(user, password)
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait(lambda: self.connack is not None)

    @property
    def accepted(self):
        return self.connack is not None and not self.connack.is_failure

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def fleet(tmp_path):
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; `.ci/run` installs it")
    settings = Settings(data_dir=tmp_path, port=free_port(), mqtt_port=free_port(), mqtt_url=None,
                        database_url=os.environ.get("DATABASE_URL"))
    db = open_db(settings.db_path)
    ids = {n: provision.register(db, settings, n, board="ESP32_GENERIC") for n in ("node-a",
                                                                                  "node-b")}
    broker = MosquittoBroker(settings.mqtt_port, settings.broker_dir, auth=True).start()
    clients = []

    def connect(user, password, client_id="c"):
        client = Client(settings.mqtt_port, user, password, client_id)
        clients.append(client)
        return client

    def service(name):
        return connect(*brokerauth.service_login(settings.broker_dir, name), client_id=name)

    yield settings, db, ids, connect, service
    for c in clients:
        c.close()
    broker.stop()


def test_nodes_reach_only_their_own_topics(fleet):
    settings, db, ids, connect, service = fleet
    a = connect("node-a", ids["node-a"]["mqtt"]["password"])
    b = connect("node-b", ids["node-b"]["mqtt"]["password"])
    assert a.accepted and b.accepted
    ingest, fleet_pub = service("ingest"), service("fleet")
    ingest.c.subscribe([("pl/v1/+/up", 1), ("pl/v1/+/conn", 1)])
    a.c.subscribe([("pl/v1/node-b/down", 1), ("pl/v1/+/down", 1), ("pl/v1/node-a/down", 1)])
    time.sleep(0.3)
    # A publishes as itself and as B: only its own frame reaches the fleet.
    a.c.publish("pl/v1/node-b/up", b"forged", 1).wait_for_publish(5)
    a.c.publish("pl/v1/node-a/up", b"genuine", 1).wait_for_publish(5)
    # The fleet sends one downlink to each: A reads its own, never B's, whatever it subscribed.
    fleet_pub.c.publish("pl/v1/node-b/down", b"for-b", 1).wait_for_publish(5)
    fleet_pub.c.publish("pl/v1/node-a/down", b"for-a", 1).wait_for_publish(5)
    assert wait(lambda: ingest.messages and a.messages)
    time.sleep(0.5)
    assert ingest.messages == [("pl/v1/node-a/up", b"genuine")]
    assert a.messages == [("pl/v1/node-a/down", b"for-a")]
    # Services are least-privilege too: the ingest worker cannot send downlinks.
    ingest.c.publish("pl/v1/node-a/down", b"from-ingest", 1).wait_for_publish(5)
    time.sleep(0.3)
    assert a.messages == [("pl/v1/node-a/down", b"for-a")]


def test_unknown_wrong_and_anonymous_clients_are_refused(fleet):
    settings, db, ids, connect, service = fleet
    assert not connect("stranger", "whatever").accepted
    assert not connect("node-a", "not-the-password").accepted
    assert not connect("node-a", ids["node-b"]["mqtt"]["password"]).accepted
    assert not connect(None, None).accepted


def test_client_id_cannot_take_over_another_nodes_session(fleet):
    settings, db, ids, connect, service = fleet
    b = connect("node-b", ids["node-b"]["mqtt"]["password"], client_id="node-b")
    a = connect("node-a", ids["node-a"]["mqtt"]["password"], client_id="node-b")
    assert a.accepted
    time.sleep(0.5)
    # With use_username_as_clientid the broker names A's session node-a: B stays connected.
    assert b.disconnects == [] and b.c.is_connected()


def test_revocation_refuses_new_logins_and_drops_the_live_one(fleet):
    settings, db, ids, connect, service = fleet
    ingest = service("ingest")
    ingest.c.subscribe("pl/v1/+/up", 1)
    a = connect("node-a", ids["node-a"]["mqtt"]["password"], client_id="node-a")
    a.c.reconnect_delay_set(60, 60)  # stay down once dropped, so the test sees the drop
    assert a.accepted
    provision.revoke(db, settings, "node-a", actor="test")
    # mosquitto 2.0 re-reads the files on SIGHUP and disconnects the revoked live session.
    assert wait(lambda: a.disconnects, timeout=5), "revoked client still connected"
    assert not connect("node-a", ids["node-a"]["mqtt"]["password"]).accepted
    # Node B is untouched.
    assert connect("node-b", ids["node-b"]["mqtt"]["password"]).accepted


def test_rotation_replaces_the_password(fleet):
    settings, db, ids, connect, service = fleet
    new = provision.rotate(db, settings, "node-b", actor="test")
    assert not connect("node-b", ids["node-b"]["mqtt"]["password"]).accepted
    assert connect("node-b", new).accepted


def test_store_keeps_only_a_hash(fleet):
    settings, db, ids, connect, service = fleet
    password = ids["node-a"]["mqtt"]["password"]
    row = db.conn.execute("SELECT * FROM node_credentials WHERE node_id = 'node-a'").fetchone()
    assert password not in repr(row)
    assert brokerauth.verify_password(password, identity_store.active_mqtt_hashes(db)["node-a"])
    text = (settings.broker_dir / "passwd").read_text()
    assert password not in text and "node-a:$7$101$" in text
    assert (settings.broker_dir / "passwd").stat().st_mode & 0o077 == 0


def test_nodes_post_senml_only_about_themselves_and_the_worker_stores_it(fleet):
    settings, db, ids, connect, service = fleet
    a = connect("node-a", ids["node-a"]["mqtt"]["password"])
    ingest = service("ingest")
    ingest.c.subscribe([("pl/v1/+/senml", 1)])
    time.sleep(0.3)
    pack = json.dumps([{"bt": 1.7e9, "n": "temperature", "u": "Cel", "v": 19.5}]).encode()
    a.c.publish("pl/v1/node-b/senml", pack, 1).wait_for_publish(5)
    a.c.publish("pl/v1/node-a/senml", pack, 1).wait_for_publish(5)
    assert wait(lambda: ingest.messages)
    time.sleep(0.5)
    assert [t for t, _ in ingest.messages] == ["pl/v1/node-a/senml"]
    w = Ingest(db)
    for topic, payload in ingest.messages * 2:  # delivered twice: stored once
        w.add(topic, payload, time.time())
    w.flush()
    assert [(r["qid"], r["value"]) for r in telemetry_store.latest_values(db, "node-a")] == [
        (0, 19.5)]
    assert telemetry_store.count_readings(db, "node-a") == 1


def test_a_supplier_login_posts_senml_only_about_its_own_nodes(fleet):
    settings, db, ids, connect, service = fleet
    token = intake.add_supplier(db, "acme")
    profile_store.set_supplier(db, "node-a", "acme")
    assert brokerauth.sync(db, settings.broker_dir)
    time.sleep(0.5)  # the broker re-reads its files on SIGHUP
    supplier = connect("supplier.acme", token, client_id="acme-cloud")
    assert supplier.accepted
    assert not connect("supplier.acme", "pls_wrong", client_id="x").accepted
    ingest = service("ingest")
    ingest.c.subscribe([("pl/v1/+/senml", 1), ("pl/v1/+/up", 1)])
    time.sleep(0.3)
    pack = json.dumps([{"bt": 1.7e9, "n": "co2", "v": 612}]).encode()
    for topic in ("pl/v1/node-b/senml", "pl/v1/node-a/up", "pl/v1/node-a/senml"):
        supplier.c.publish(topic, pack, 1).wait_for_publish(5)
    assert wait(lambda: ingest.messages)
    time.sleep(0.5)
    assert [t for t, _ in ingest.messages] == ["pl/v1/node-a/senml"]


def test_a_rotated_supplier_token_stops_at_the_broker(fleet):
    settings, db, ids, connect, service = fleet
    old = intake.add_supplier(db, "acme")
    profile_store.set_supplier(db, "node-a", "acme")
    brokerauth.sync(db, settings.broker_dir)
    time.sleep(0.5)  # the broker re-reads its files on SIGHUP
    live = connect("supplier.acme", old, client_id="acme-cloud")
    live.c.reconnect_delay_set(60, 60)  # stay down once dropped, so the test sees the drop
    assert live.accepted
    new = intake.rotate_supplier(db, "acme")
    assert brokerauth.sync(db, settings.broker_dir)
    # mosquitto re-checks a live session's password on reload: the old token's session ends
    # (before any other supplier.acme login, which would take the session over anyway).
    assert wait(lambda: live.disconnects, timeout=5), "old token's session still connected"
    assert not connect("supplier.acme", old, client_id="acme-2").accepted
    assert connect("supplier.acme", new, client_id="acme-3").accepted
