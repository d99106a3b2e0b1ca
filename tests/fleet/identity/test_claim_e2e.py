"""Zero-touch claim end to end: generic image, claim, approval, node online with its own login.

Real mosquitto (the fleet's logins, plus the claim listener), the fleet's ClaimService, and the
host-port firmware booting the generic image's config.json (claim.py is the same file the device
runs). Only the board itself is simulated.
"""

import asyncio
import json
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion
from polylink import claim as fw_claim
from polylink import config as fw_config
from polylink_host import sim
from services import free_port

from fleet.broker import auth as brokerauth
from fleet.broker.server import MosquittoBroker
from fleet.identity import claims, provision
from fleet.identity import provision_cli as cli
from fleet.ingest import Ingest
from fleet.settings import Settings
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store.migrate import open_db
from provisioning import image


class Fleet:
    def __init__(self, tmp):
        self.tmp = tmp
        self.settings = Settings(data_dir=tmp / "data", port=free_port(),
                                 mqtt_port=free_port(), mqtt_url=None,
                                 database_url=os.environ.get("DATABASE_URL"))
        self.claim_port = free_port()
        self.db = open_db(self.settings.db_path)
        brokerauth.sync(self.db, self.settings.broker_dir)
        self.broker = MosquittoBroker(self.settings.mqtt_port, self.settings.broker_dir, auth=True,
                                      claim_port=self.claim_port).start()
        self.service = claims.ClaimService(self.settings).start()
        self.frames: list[tuple[str, bytes]] = []
        user, pw = brokerauth.service_login(self.settings.broker_dir, "ingest")
        self.ingest = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user,
                                  protocol=mqtt.MQTTv311)
        self.ingest.username_pw_set(user, pw)
        self.ingest.on_message = lambda c, u, m: self.frames.append((m.topic, m.payload))
        self.ingest.connect("127.0.0.1", self.settings.mqtt_port)
        self.ingest.subscribe("pl/v1/+/up", 1)
        self.ingest.loop_start()

    @property
    def uplinks(self) -> list[str]:
        return [topic for topic, _ in self.frames]

    def store_uplinks(self) -> int:
        """Store what the nodes sent so far, as the fleet's ingest worker does; return how many."""
        ingest = Ingest(self.db)
        for topic, payload in list(self.frames):
            ingest.add(topic, payload, time.time())
        return ingest.flush()

    def close(self):
        self.ingest.loop_stop()
        self.service.stop()
        self.broker.stop()


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    yield f
    f.close()


class Board:
    """A board running the host-port firmware from a flash directory, in its own thread."""

    def __init__(self, tmp, name, config: dict, board: dict, uid: str | None = None,
                 claim_id: str | None = None):
        self.root = tmp / name
        self.root.mkdir()
        if claim_id:
            (self.root / "claim_id").write_text(claim_id)  # as if it had asked before
        (self.root / "board.json").write_text(json.dumps(board))
        (self.root / "config.json").write_text(json.dumps(config))
        self.node = sim.SimNode(name, self.root)
        if uid:
            self.node.hal.hw.uid = uid
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.task = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        async def main():
            self.task = asyncio.current_task()
            await self.node.run()

        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # noqa: BLE001 - the test looks at what stopped the board
            self.error = e

    @property
    def uid(self):
        return self.node.hal.unique_id()

    def config(self):
        return json.loads((self.root / "config.json").read_text())

    def stop(self):
        if self.task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)


def wait(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def generic_image_config(fleet, tmp, monkeypatch, token):
    """Build the generic image with the real CLI and read its config.json back."""
    monkeypatch.setenv("DATA_DIR", str(fleet.settings.data_dir))
    monkeypatch.setattr(cli, "BUILD", tmp / "build")
    r = CliRunner().invoke(cli.cli, ["image", "--board", "ESP32_GENERIC", "--claim-token", token,
                                     "--claim-port", str(fleet.claim_port), "--mqtt-host",
                                     "127.0.0.1"])
    assert r.exit_code == 0, r.output
    path = tmp / "build" / "images" / f"generic.ESP32_GENERIC.{token.split('.')[0]}.littlefs.bin"
    files = image.read_back(path.read_bytes())
    cfg = json.loads(files["config.json"])
    assert "node" not in cfg and cfg["claim"]["token"] == token
    cfg["claim"]["retry"] = 1  # the test's patience; devices default to 30 s
    return cfg, json.loads(files["board.json"])


def test_claim_waits_for_approval_then_the_node_runs_as_itself(fleet, tmp_path, monkeypatch):
    token = claims.create_token(fleet.db, fleet.settings, "ESP32_GENERIC", uses=5, hours=1,
                                actor="tech")
    cfg, board = generic_image_config(fleet, tmp_path, monkeypatch, token)
    a = Board(tmp_path, "board-a", cfg, board)
    try:
        mac = a.uid
        assert wait(lambda: identity_store.get_claim(fleet.db, mac) is not None), a.error
        time.sleep(2.5)  # it keeps asking, and keeps waiting
        assert identity_store.get_claim(fleet.db, mac)["state"] == "pending"
        assert identity_store.node_for_mac(fleet.db, mac) is None and not fleet.uplinks
        claims.decide(fleet.db, identity_store.get_claim(fleet.db, mac)["id"], True, "tech")
        node = f"pl-{mac}"
        assert wait(lambda: f"pl/v1/{node}/up" in fleet.uplinks), (a.error, fleet.uplinks)
        saved = a.config()
        assert saved["node"] == node and saved["claim"] is None
        # It logs in with its own credentials, which the fleet keeps only as a hash.
        assert brokerauth.verify_password(saved["mqtt"]["password"],
                                          identity_store.active_mqtt_hashes(fleet.db)[node])
        assert identity_store.get_claim(fleet.db, mac)["state"] == "issued"
        assert fw_config.validate(saved, board).node == node
    finally:
        a.stop()
    # Once the fleet has heard the node, the token does not work again for this board: a replay
    # of its claim is refused.
    assert fleet.store_uplinks() and node_store.get_node(fleet.db, node)["last_seen"]
    answer = claims.request(fleet.db, fleet.settings, token.split(".")[0],
                            identity_store.get_claim(fleet.db, mac)["client_id"],
                            json.dumps({"mac": mac}).encode())
    assert answer["state"] == "rejected" and "already claimed" in answer["reason"]


def _claim_once(tmp, name, cfg, board, uid, claim_id=None):
    """Run only the firmware's claim on a board; the fleet's refusal raises ClaimError."""
    root = tmp / name
    root.mkdir()
    if claim_id:
        (root / "claim_id").write_text(claim_id)  # as if it had asked before
    (root / "board.json").write_text(json.dumps(board))
    (root / "config.json").write_text(json.dumps(cfg))
    node = sim.SimNode(name, root)
    node.hal.hw.uid = uid
    c = fw_config.load(str(root), default_node=name, board=node.board)
    return asyncio.run(asyncio.wait_for(fw_claim.run(node.hal, c, str(root)), 20))


def test_stolen_token_cannot_take_over_an_existing_node(fleet, tmp_path, monkeypatch):
    token = claims.create_token(fleet.db, fleet.settings, "ESP32_GENERIC", uses=10, hours=1,
                                auto_approve=True, actor="tech")
    cfg, board = generic_image_config(fleet, tmp_path, monkeypatch, token)
    # A node a technician registered, and one that claimed: both own their MAC.
    provision.register(fleet.db, fleet.settings, "lamp-1", board="ESP32_GENERIC",
                       mac="aa0000000001")
    assert _claim_once(tmp_path, "first", cfg, board, "aa0000000002") == "pl-aa0000000002"
    with pytest.raises(fw_claim.ClaimError, match="already node lamp-1"):
        _claim_once(tmp_path, "thief-1", cfg, board, "aa0000000001")
    # Same MAC as the claimed board, another claim id: it waits for an operator (the auto-approve
    # token does not decide a conflict), and it got no credentials.
    answer = claims.request(fleet.db, fleet.settings, token.split(".")[0], "c-thief-2",
                            json.dumps({"mac": "aa0000000002"}).encode())
    assert answer == {"state": "pending"}
    assert set(identity_store.active_mqtt_hashes(fleet.db)) == {"lamp-1", "pl-aa0000000002"}


def test_the_real_board_gets_in_after_a_squatter_claimed_its_mac(fleet, tmp_path, monkeypatch):
    token = claims.create_token(fleet.db, fleet.settings, "ESP32_GENERIC", uses=1, hours=1,
                                auto_approve=True, actor="tech")
    cfg, board = generic_image_config(fleet, tmp_path, monkeypatch, token)
    mac = "ee0000000001"
    # Someone with the generic image's token claims the victim's MAC first and spends the use.
    squat = claims.request(fleet.db, fleet.settings, token.split(".")[0], "c-squatter",
                           json.dumps({"mac": mac}).encode())
    assert squat["state"] == "issued"
    real = Board(tmp_path, "real", cfg, board, uid=mac)
    node = f"pl-{mac}"
    try:
        assert wait(lambda: identity_store.get_claim(fleet.db, mac).get("client_id") !=
                    "c-squatter"), real.error
        claim = identity_store.get_claim(fleet.db, mac)
        time.sleep(1.5)  # the real board keeps asking and waits: it is not refused
        assert real.error is None and claim["state"] == "pending" and claim["conflict"]
        assert claims.decide(fleet.db, claim["id"], True, "tech", settings=fleet.settings) == [node]
        assert wait(lambda: f"pl/v1/{node}/up" in fleet.uplinks), (real.error, fleet.uplinks)
        saved = real.config()
    finally:
        real.stop()
    current = identity_store.active_mqtt_hashes(fleet.db)[node]
    assert brokerauth.verify_password(saved["mqtt"]["password"], current)
    assert not brokerauth.verify_password(squat["mqtt"]["password"], current)


def test_token_limits_uses_and_rejection(fleet, tmp_path, monkeypatch):
    token = claims.create_token(fleet.db, fleet.settings, "ESP32_GENERIC", uses=1, hours=1,
                                auto_approve=True, actor="tech")
    cfg, board = generic_image_config(fleet, tmp_path, monkeypatch, token)
    assert _claim_once(tmp_path, "one", cfg, board, "bb0000000001") == "pl-bb0000000001"
    # Used up: no other board gets an identity with it.
    with pytest.raises(fw_claim.ClaimError, match="claim token used up"):
        _claim_once(tmp_path, "two", cfg, board, "bb0000000003")
    assert identity_store.node_for_mac(fleet.db, "bb0000000003") is None
    # A technician's rejection reaches the board as a refusal.
    manual = claims.create_token(fleet.db, fleet.settings, "ESP32_GENERIC", uses=3, hours=1,
                                 actor="tech")
    cfg2 = dict(cfg, claim=dict(cfg["claim"], token=manual))
    answer = claims.request(fleet.db, fleet.settings, manual.split(".")[0], "c-1",
                            json.dumps({"mac": "bb0000000002"}).encode())
    assert answer == {"state": "pending"}
    claims.decide(fleet.db, identity_store.get_claim(fleet.db, "bb0000000002")["id"], False, "tech",
                  "not ours")
    with pytest.raises(fw_claim.ClaimError, match="not ours"):
        _claim_once(tmp_path, "rej", cfg2, board, "bb0000000002", claim_id="c-1")


def _listener_admits(fleet, token) -> bool:
    """Whether the broker's claim listener accepts the token as a login now."""
    tid, _, secret = token.partition(".")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="c-probe", protocol=mqtt.MQTTv311)
    c.username_pw_set(tid, secret)
    result = {}
    c.on_connect = lambda cl, u, f, rc, p: result.setdefault("rc", rc)
    c.connect("127.0.0.1", fleet.claim_port)
    c.loop_start()
    try:
        assert wait(lambda: "rc" in result, 5), "no CONNACK from the claim listener"
    finally:
        c.disconnect()
        c.loop_stop()
    return not result["rc"].is_failure


def test_a_lost_answer_is_sent_again_until_the_board_uses_its_identity(fleet, tmp_path,
                                                                        monkeypatch):
    token = claims.create_token(fleet.db, fleet.settings, "ESP32_GENERIC", uses=1, hours=1,
                                auto_approve=True, actor="tech")
    tid = token.split(".")[0]
    cfg, board = generic_image_config(fleet, tmp_path, monkeypatch, token)
    mac = "cc0000000001"
    # The fleet issues the identity, but the answer never reaches the board (its link dropped).
    lost = claims.request(fleet.db, fleet.settings, tid, "c-lost-1",
                          json.dumps({"mac": mac}).encode())
    assert lost["state"] == "issued" and lost["node"] == f"pl-{mac}"
    # The token's one use is spent, yet the listener still admits it: the board must be able to
    # ask again. Nobody else gets an identity with it.
    assert _listener_admits(fleet, token)
    other = claims.request(fleet.db, fleet.settings, tid, "c-other",
                           json.dumps({"mac": "cc0000000002"}).encode())
    assert other == {"state": "rejected", "reason": "claim token used up"}
    # The same board (same MAC, same claim id in its flash) asks again and runs as itself.
    b = Board(tmp_path, "lost", cfg, board, uid=mac, claim_id="c-lost-1")
    node = f"pl-{mac}"
    try:
        assert wait(lambda: f"pl/v1/{node}/up" in fleet.uplinks), (b.error, fleet.uplinks)
        pw = b.config()["mqtt"]["password"]
    finally:
        b.stop()
    current = identity_store.active_mqtt_hashes(fleet.db)[node]
    assert pw != lost["mqtt"]["password"] and brokerauth.verify_password(pw, current)
    assert not brokerauth.verify_password(lost["mqtt"]["password"], current), \
        "the password in the lost answer no longer works"
    # Heard with its identity: the next sync (fleet run's upkeep does it every round) takes the
    # token off the listener, and a replay of the claim is refused.
    assert fleet.store_uplinks()
    brokerauth.sync(fleet.db, fleet.settings.broker_dir)
    assert wait(lambda: not _listener_admits(fleet, token), 10)
    again = claims.request(fleet.db, fleet.settings, tid, "c-lost-1",
                           json.dumps({"mac": mac}).encode())
    assert again["state"] == "rejected" and "already claimed" in again["reason"]
    assert set(identity_store.active_mqtt_hashes(fleet.db)) == {node}


def test_bad_tokens_are_refused_with_the_reason(fleet):
    with pytest.raises(claims.ClaimError, match="unknown board"):
        claims.create_token(fleet.db, fleet.settings, "NOPE")
    with pytest.raises(claims.ClaimError, match="uses must be"):
        claims.create_token(fleet.db, fleet.settings, "ESP32_GENERIC", uses=0)
    assert claims.request(fleet.db, fleet.settings, "ctnope", "c-1", b"{}")["state"] == "rejected"
