"""What mosquitto says about itself under $SYS: the messages it holds and the clients connected.

Read by the upkeep worker (fleet/upkeep.py) and kept in the store, so /metrics in the web process
can show the broker's queue depth without a broker login of its own. mosquitto publishes these
every sys_interval (10 s by default) as retained messages, so a fresh subscriber gets the last
values at once.
"""

import threading

import paho.mqtt.client as mqtt

# $SYS topic -> the name the store and /metrics use.
TOPICS = {
    # Messages held: retained ones plus those queued for persistent sessions that are behind
    # or offline (the ingest worker's backlog shows here).
    "$SYS/broker/store/messages/count": "messages_stored",
    "$SYS/broker/clients/connected": "clients_connected",
}


def read(host: str, port: int, username=None, password=None, timeout: float = 3.0) -> dict:
    """{name: int} of the TOPICS the broker answered within timeout (empty if it did not)."""
    got: dict = {}
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    if username:
        client.username_pw_set(username, password)

    def on_connect(c, _userdata, _flags, reason, _props):
        if reason == 0:
            c.subscribe([(topic, 0) for topic in TOPICS])
        else:
            done.set()

    def on_message(_c, _userdata, msg):
        try:
            got[TOPICS[msg.topic]] = int(msg.payload)
        except (KeyError, ValueError):
            return
        if len(got) == len(TOPICS):
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return {}
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got
