"""The broker's own figures ($SYS) that /metrics shows, read from a real mosquitto."""

import time

import paho.mqtt.client as mqtt

from fleet.broker import sysstats
from fleet.store import upkeep as upkeep_store
from fleet.upkeep import Upkeep


def test_queue_depth_grows_with_messages_held_for_an_offline_session(mosquitto, settings, db):
    # A persistent session that is away: the broker must hold what is published to it.
    away = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="away", clean_session=False)
    away.connect(mosquitto.host, mosquitto.port)
    away.loop_start()
    away.subscribe("pl/v1/+/up", qos=1)
    time.sleep(0.3)
    away.disconnect()
    away.loop_stop()
    before = sysstats.read(mosquitto.host, mosquitto.port, timeout=15)
    assert set(before) == set(sysstats.TOPICS.values()), before
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    for i in range(20):
        pub.publish("pl/v1/n01/up", bytes([i]), qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    deadline = time.monotonic() + 25  # mosquitto updates $SYS every sys_interval (10 s)
    while True:
        after = sysstats.read(mosquitto.host, mosquitto.port, timeout=5)
        if after.get("messages_stored", 0) >= before["messages_stored"] + 20:
            break
        assert time.monotonic() < deadline, (before, after)
        time.sleep(1)
    # The upkeep worker keeps them in the store for /metrics.
    settings = type(settings)(data_dir=settings.data_dir, port=8000, mqtt_port=mosquitto.port,
                              mqtt_url=None)
    done = Upkeep(settings, broker=True).round(db)
    assert done["broker_sys"]["messages_stored"] >= before["messages_stored"] + 20
    assert upkeep_store.upkeep_state(db)["broker_sys"]["detail"] == done["broker_sys"]


def test_no_broker_means_no_figures():
    assert sysstats.read("127.0.0.1", 1, timeout=0.5) == {}
