"""Zero-touch claims: claim tokens (limited uses and time), claim requests, approval, issuance.

A generic image carries a claim token "<id>.<secret>". The broker's claim listener admits the
token as a login (user = token id) while the token is valid; a board publishes its MAC to
pl/v1/claim/{token id}/{claim id}/req and the ClaimService answers on .../resp. A claim waits for
a technician's approval unless the token says auto_approve. A MAC that a technician registered
is never given that node's identity through a claim: a stolen token cannot take over a node.

Claim squatting: a token holder may claim a board's MAC before the board does. A second board
(another claim id) asking for a MAC that is already claimed or pending is therefore neither
refused nor auto-approved: its claim waits as a conflict, and the operator, seeing both requests,
approves one; that rejects the others and revokes an identity one of them got.

An answer can be lost (the board's link drops, or it stops waiting). Until the board has been heard
with its identity, the same board (same MAC and the random claim id kept in its flash) that asks
again gets its identity again with a fresh password, and the token stays admitted for that, also
when its uses ran out. Once the node has reported, the token no longer works for it.
"""

import json
import logging
import secrets
import threading
import time
from contextlib import contextmanager

from fleet import mqtt, topics
from fleet.broker import auth as brokerauth
from fleet.broker.server import BrokerError
from fleet.identity import provision
from fleet.store import identity as identity_store
from fleet.store import orgs as org_store
from fleet.store.base import StoreError
from fleet.store.migrate import open_db
from fleet.store.scope import scope_of, set_scope
from provisioning import boards

log = logging.getLogger("fleet.claims")

REQUEST_TOPIC = topics.CLAIM_REQUESTS
MAX_USES = 10000
MAX_HOURS = 24 * 90


class ClaimError(ValueError):
    """A claim token or claim cannot be created or decided as asked."""


def create_token(db, settings, board: str, uses: int = 1, hours: float = 24,
                 auto_approve: bool = False, actor=None) -> str:
    """Create a claim token of the connection's organisation and return it ("<id>.<secret>",
    shown once); the nodes claimed with it are that organisation's."""
    try:
        boards.load(board)
    except boards.BoardError as e:
        raise ClaimError(str(e)) from None
    if not 1 <= uses <= MAX_USES:
        raise ClaimError(f"uses must be 1..{MAX_USES}")
    if not 0 < hours <= MAX_HOURS:
        raise ClaimError(f"hours must be more than 0 and at most {MAX_HOURS}")
    token_id = "ct" + secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    identity_store.add_claim_token(db, token_id, brokerauth.hash_password(secret), board, uses,
                                   time.time() + hours * 3600, auto_approve, actor)
    brokerauth.sync(db, settings.broker_dir)
    return f"{token_id}.{secret}"


def revoke_token(db, settings, token_id: str, actor=None) -> None:
    """End a claim token of the connection's organisation; the broker refuses it at once."""
    try:
        identity_store.revoke_claim_token(db, token_id, actor)
    except StoreError as e:
        raise ClaimError(str(e)) from None
    brokerauth.sync(db, settings.broker_dir)


@contextmanager
def _as_token_org(db, token: dict):
    """Act for the organisation of the claim token: the node a claim issues is registered there
    (under its node quota) and the audit records are its."""
    before = scope_of(db)
    set_scope(db, org_store.scope_for(db, token["org_id"]))
    try:
        yield
    finally:
        set_scope(db, before)


def request(db, settings, token_id: str, client_id: str, payload: bytes,
            node_port: int | None = None) -> dict:
    """Handle one claim request; return the answer to publish (state pending|rejected|issued)."""
    token = identity_store.get_claim_token(db, token_id)
    if token is None or token["revoked_at"] is not None or token["expires"] <= time.time():
        return {"state": "rejected", "reason": "claim token unknown, expired or revoked"}
    try:
        body = json.loads(payload)
        mac = provision.check_mac(body.get("mac"))
    except (ValueError, AttributeError, TypeError) as e:
        return {"state": "rejected", "reason": f"bad claim request: {e}"}
    if mac is None:
        return {"state": "rejected", "reason": "bad claim request: no mac"}
    claim = identity_store.get_claim(db, mac, client_id)
    if claim is None:
        claim = _new_claim(db, token, client_id, mac)
        if "id" not in claim:  # refused: the answer
            return claim
    if claim["state"] == "pending":
        return {"state": "pending"}
    if claim["state"] == "rejected":
        return {"state": "rejected", "reason": claim["reason"] or "rejected by a technician"}
    if claim["state"] == "issued":
        if claim["token_id"] == token_id and identity_store.claim_undelivered(db, claim["id"]):
            # The same board (same MAC, same random claim id) asks again before it ever used its
            # identity: the answer was lost on the way (a dropped link, a board that gave up
            # waiting). It gets a fresh password; the one in the lost answer stops working.
            with _as_token_org(db, token):
                identity = provision.issue(db, settings, claim["node_id"], claim["board"],
                                           actor=f"claim:{claim['id']}", mac=mac)
            log.info("claim %s: identity %s sent again", claim["id"], claim["node_id"])
            return _issued(identity, node_port or settings.mqtt_port)
        # The token stops working for a board once it has used its identity.
        return {"state": "rejected", "reason": f"already claimed: this board is node "
                                               f"{claim['node_id']}"}
    if not identity_store.use_claim_token(db, token_id) and not claim["conflict"]:
        # An operator's choice in a conflict goes through without a use left: the squatter may
        # have spent the real board's.
        return {"state": "rejected", "reason": "claim token used up or expired"}
    with _as_token_org(db, token):
        identity = provision.register(db, settings, "pl-" + mac, board=claim["board"], mac=mac,
                                      actor=f"claim:{claim['id']}", sync=False)
    identity_store.mark_claim_issued(db, claim["id"], identity["node_id"])
    # The node's login, and the token's while its board has not used the identity yet.
    brokerauth.sync(db, settings.broker_dir)
    return _issued(identity, node_port or settings.mqtt_port)


def _new_claim(db, token: dict, client_id: str, mac: str) -> dict:
    """Record a board's first ask for a MAC; a refusal to answer instead has a "reason"."""
    owner = identity_store.node_for_mac(db, mac)
    rivals = identity_store.rival_claims(db, mac)
    if owner is not None and not any(c["node_id"] == owner for c in rivals):
        # A technician registered this hardware: only a technician re-provisions it.
        return {"state": "rejected", "reason": f"this board is already node {owner}; ask a "
                                               "technician to re-provision it"}
    if rivals:
        # Another board (claim id) asked for this MAC first: one of the two copied the other's
        # MAC. Neither the token nor the first come decides: an operator compares both requests.
        log.warning("claim for %s by %s conflicts with claim %s: waits for an operator", mac,
                    client_id, ", ".join(str(c["id"]) for c in rivals))
        return identity_store.add_claim(db, token["id"], client_id, mac, token["board"],
                                        conflict=True)
    if not identity_store.claim_token_usable(token):
        return {"state": "rejected", "reason": "claim token used up"}
    claim = identity_store.add_claim(db, token["id"], client_id, mac, token["board"])
    if token["auto_approve"]:
        with _as_token_org(db, token):
            identity_store.decide_claim(db, claim["id"], "approved", f"token:{token['id']}")
        claim = identity_store.get_claim_by_id(db, claim["id"])
    return claim


def _issued(identity: dict, port: int) -> dict:
    return {"state": "issued", "node": identity["node_id"], "mqtt": identity["mqtt"],
            "port": port, "lorawan": identity["lorawan"], "ota": identity["ota"]}


class ClaimService:
    """Answers claim requests on the fleet's broker (a paho client on its own thread)."""

    def __init__(self, settings, node_port: int | None = None):
        self.settings = settings
        self.node_port = node_port
        self.client = None
        self.answered = 0
        self.ready = threading.Event()

    def start(self) -> "ClaimService":
        # Its own service login: with use_username_as_clientid the downlink publishers (account
        # polylink-fleet) would otherwise take this session over.
        host, port, user, password = self.settings.mqtt_login("claims")
        c = mqtt.client("polylink-claims", user, password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self.client = c
        if not self.ready.wait(10):
            c.loop_stop()
            raise BrokerError("claim service: the broker did not accept its login")
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(REQUEST_TOPIC, 1)
            self.ready.set()

    def _on_message(self, client, userdata, msg):
        ids = topics.claim_topic(msg.topic)
        if ids is None:
            return
        token_id, client_id = ids
        db = open_db(self.settings.db_path)
        try:
            answer = request(db, self.settings, token_id, client_id, msg.payload, self.node_port)
        except Exception:  # noqa: BLE001 - one bad request must not stop claims for everyone
            log.exception("claim request on %s failed", msg.topic)
            answer = {"state": "pending"}
        finally:
            db.conn.close()
        client.publish(topics.claim_answer(token_id, client_id), json.dumps(answer), qos=1)
        self.answered += 1

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def decide(db, claim_id: int, approve: bool, actor: str, reason: str | None = None,
           settings=None) -> list[str]:
    """A technician approves or rejects a pending claim; the board learns it on its next ask.

    Approving a claim in conflict rejects the others for its MAC and revokes an identity one of
    them got (returned); with settings the broker drops that login at once.
    """
    try:
        revoked = identity_store.decide_claim(db, claim_id, "approved" if approve else "rejected",
                                              actor, reason)
    except StoreError as e:
        raise ClaimError(str(e)) from None
    if settings is not None:  # a revoked identity, and which tokens the claim listener admits
        brokerauth.sync(db, settings.broker_dir)
    return revoked


def generic_config(token: str, mqtt_host: str, claim_port: int, wifi_ssid: str = "",
                   wifi_password: str = "", retry: int = 30) -> dict:
    """config.json of a generic image: no identity, only the claim token and where to claim."""
    return {"wifi": {"ssid": wifi_ssid, "password": wifi_password},
            "mqtt": {"host": mqtt_host},
            "claim": {"token": token, "port": claim_port, "retry": retry}}
