"""A provider's uplink delivered again is stored once (issue 15).

Networks redeliver: an MQTT broker sends an unacknowledged QoS-1 message again after a
reconnect, and a provider worker that died after committing but before acking leaves its
messages to the worker that takes over. The frame was already deduplicated by (node, seq); the
reception rows are now too, by the provider's own identity of the message.
"""

import json
import threading
from pathlib import Path

import pytest

from fleet.providers import registry, worker
from fleet.store import identity as identity_store
from fleet.store import providers as provider_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db

FIX = Path(__file__).parent / "fixtures"
DEV_EUI = "02A1B2C3D4E5F601"
TTS_TOPIC = "v3/polylink-city@ttn/devices/pl-lamp-7/up"
CS_TOPIC = "application/7b0c/device/02a1b2c3d4e5f601/event/up"
KINDS = {"ttn": ("tts", TTS_TOPIC, "tts_uplink.json"),
         "cs": ("chirpstack", CS_TOPIC, "chirpstack_uplink.json")}


@pytest.fixture
def fleet(db, tmp_path):
    identity_store.register_node(db, "lamp-7", {"mqtt_user": "lamp-7", "mqtt_hash": "x",
                                                "dev_eui": DEV_EUI})
    registry.add(db, tmp_path, {"name": "ttn", "kind": "tts", "host": "localhost",
                                "application": "polylink-city"}, None)
    registry.add(db, tmp_path, {"name": "cs", "kind": "chirpstack", "host": "localhost",
                                "application": "7b0c"}, None)
    return db


def message(provider):
    return (FIX / KINDS[provider][2]).read_bytes()


def ingest(db, provider, payloads, t=1000.0):
    kind, topic, _ = KINDS[provider]
    ing = worker.ProviderIngest(db, provider, kind)
    for payload in payloads:
        ing.add_message(topic, payload, t)
    ing.flush()


def receptions(db):
    return sorted((r["provider"], r["gateway"]) for r in provider_store.receptions(db, "lamp-7"))


@pytest.mark.parametrize("provider, gateways", [("ttn", 2), ("cs", 1)])
def test_a_redelivered_uplink_adds_no_reception(fleet, provider, gateways):
    ingest(fleet, provider, [message(provider), message(provider)])  # twice in one batch
    ingest(fleet, provider, [message(provider)], t=1005.0)  # and again after a restart
    assert len(receptions(fleet)) == gateways
    assert telemetry_store.count_frames(fleet, "lamp-7") == 1


def test_another_uplink_and_another_network_still_add_theirs(fleet):
    ingest(fleet, "ttn", [message("ttn")])
    ingest(fleet, "cs", [message("cs")])  # the same frame heard on ChirpStack: its reception
    later = json.loads(message("cs"))
    later["deduplicationId"] = "9d1e0c55-0000-4000-8000-00000000000b"  # a new uplink (a retry
    later["fCnt"] = 11                                                    # of the same frame)
    ingest(fleet, "cs", [json.dumps(later).encode()])
    assert receptions(fleet) == [("cs", "0016c001f153a14c"), ("cs", "0016c001f153a14c"),
                                 ("ttn", "city-hall-gw"), ("ttn", "eui-aa555a0000000101")]


def test_a_message_without_an_identity_is_stored_as_before(fleet):
    anonymous = json.loads(message("cs"))
    del anonymous["deduplicationId"]
    ingest(fleet, "cs", [json.dumps(anonymous).encode()] * 2)
    assert len(receptions(fleet)) == 2  # nothing to tell a redelivery from a new uplink by


def test_two_workers_storing_the_same_uplinks_at_once_store_them_once(fleet, settings):
    # Two workers, each with its own connection, commit the same 50 uplinks (both ChirpStack
    # messages and TTS's) at the same moment: the unique key, not the order, decides.
    msgs = {p: [] for p in KINDS}
    for n in range(50):
        tts = json.loads(message("ttn"))
        tts["uplink_message"]["f_cnt"] = 100 + n
        tts["correlation_ids"][0] = f"as:up:01HX6YGQ7E0V83YRZ7K4S5J{n:03d}"
        msgs["ttn"].append(json.dumps(tts).encode())
        cs = json.loads(message("cs"))
        cs["fCnt"] = 100 + n
        cs["deduplicationId"] = f"3a5a2b7e-8f6b-4c5c-9d4b-{n:012x}"
        msgs["cs"].append(json.dumps(cs).encode())
    start, failed = threading.Barrier(2), []

    def run():
        db = open_db(settings.db_path)
        try:
            workers = {p: worker.ProviderIngest(db, p, KINDS[p][0]) for p in KINDS}
            for p, w in workers.items():
                for payload in msgs[p]:
                    w.add_message(KINDS[p][1], payload, 1000.0)
            start.wait()
            for w in workers.values():
                w.flush()
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            failed.append(e)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failed == []
    rows = provider_store.receptions(fleet, "lamp-7", limit=1000)
    assert len(rows) == 50 * 2 + 50  # TTS: two gateways per uplink; ChirpStack: one
