"""Zero-touch claim: a generic image asks the fleet for its own identity on first boot.

config.json carries {"claim": {"token": "<id>.<secret>", "port": 1884}} instead of a login. The
node logs in to the broker's claim listener with the token, publishes its hardware id to
pl/v1/claim/{token id}/{claim id}/req and waits on .../resp. The claim id is random, kept in flash
(so a pending claim survives reboots), and only this node can read its responses (the broker's ACL
binds both topic levels to the login and the client id). The answer is "pending" (a technician has
to approve), "rejected", or the identity, which is saved into config.json; then the node resets
and boots as itself.
"""

import asyncio
import json

from polylink import config
from polylink.net import stream
from polylink.net.mqtt import MQTTClient, MQTTError

_CLAIM_ID_FILE = "claim_id"
_WAIT_S = 10  # seconds per request: the fleet answers at once unless the broker lost it


class ClaimError(Exception):
    """The fleet refused the claim; the text says why."""


def _random_hex(n) -> str:
    # os.urandom is the ESP32's hardware RNG; ports without it (the WebAssembly one the tests
    # use) fall back to the random module: imported here because which one exists is only known
    # by trying.
    try:
        from os import urandom

        return "".join("%02x" % b for b in urandom(n))
    except ImportError:
        import random

        return "".join("%02x" % random.getrandbits(8) for _ in range(n))


def claim_id(hal) -> str:
    """This board's claim id: random, made once and kept in flash."""
    path = hal.path(_CLAIM_ID_FILE)
    try:
        with open(path) as f:
            cid = f.read().strip()
        if cid:
            return cid
    except OSError:
        pass
    cid = "c-" + _random_hex(8)
    with open(path, "w") as f:
        f.write(cid)
    return cid


def topics(token_id, cid):
    base = "pl/v1/claim/%s/%s/" % (token_id, cid)
    return base + "req", base + "resp"


class _Answer:
    """Collects the fleet's answer on the response topic."""

    def __init__(self):
        self.msg = b""
        self.got = asyncio.Event()

    def on_message(self, topic, msg, retained):
        self.msg = bytes(msg)
        self.got.set()


async def _ask(hal, cfg, cid, token_id, secret, request, box):
    """One session: send the request; box.msg holds the fleet's answer unless it stayed silent."""
    got = box.got
    cl = MQTTClient(cid, keepalive=60, user=token_id, password=secret)
    cl.on_message = box.on_message
    reader, writer = await hal.open_connection(cfg.mqtt_host, cfg.claim["port"], cfg.mqtt_tls)
    try:
        await cl.connect(reader, writer)
        req_topic, resp_topic = topics(token_id, cid)
        await cl.subscribe(resp_topic, 1)

        async def pump():
            while True:
                await cl.read_packet()

        task = asyncio.create_task(pump())
        try:
            await cl.publish(req_topic, request, qos=1)
            try:
                await asyncio.wait_for(got.wait(), _WAIT_S)
            except asyncio.TimeoutError:
                pass
        finally:
            task.cancel()
        try:
            await cl.disconnect()
        except OSError:
            pass
    finally:
        await stream.close(writer)


async def run(hal, cfg, root):
    """Claim until the fleet issues this board's identity; save it into config.json."""
    token_id, _, secret = cfg.claim["token"].partition(".")
    cid = claim_id(hal)
    request = json.dumps({"mac": hal.unique_id(), "board": cfg.board.get("name")}).encode()
    retry = cfg.claim.get("retry", 30)
    while True:
        if not hal.wifi_isconnected():
            hal.wifi_connect(cfg.wifi_ssid, cfg.wifi_password)
        box = _Answer()
        answer = {}
        try:
            await _ask(hal, cfg, cid, token_id, secret, request, box)
            if box.msg:
                answer = json.loads(box.msg)
        except (OSError, MQTTError, ValueError) as e:
            print("polylink: claim:", e)
        state = answer.get("state")
        if state == "issued":
            _save(root, cfg, answer)
            return answer["node"]
        if state == "rejected":
            raise ClaimError(answer.get("reason") or "refused")
        if state == "pending":
            print("polylink: claim %s waits for approval" % cid)
        await asyncio.sleep(retry)


def _save(root, cfg, answer):
    mqtt = {"host": cfg.mqtt_host, "port": answer.get("port") or 1883,
            "user": answer["mqtt"]["user"], "password": answer["mqtt"]["password"],
            "tls": cfg.mqtt_tls, "keepalive": cfg.keepalive}
    from polylink.ota.credential import file_password

    changes = {"node": answer["node"], "mqtt": mqtt, "claim": None,
               "ota": {"keys": answer.get("ota", {}).get("keys", {}),
                       "password": file_password(answer["mqtt"]["password"])}}
    if answer.get("lorawan"):
        changes["lorawan"] = answer["lorawan"]
    config.save(root, changes)
