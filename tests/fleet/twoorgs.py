"""Two organisations with data, for the walks that prove one cannot reach the other's: the route
walk (tests/fleet/organisations/test_isolation.py) and the CLI walk (test_cli_isolation.py).

"parking" owns one of every kind of object, each named with MARK; "environment" owns a few of
its own, named without it. snapshot() holds every row of parking's, to compare after a walk."""

import time
from dataclasses import dataclass

from polylink import proto
from polylink.ota.credential import file_password
from routewalk import frame

from fleet.identity import provision
from fleet.ingest import Ingest
from fleet.ota import releases
from fleet.senml import intake
from fleet.store import alerts as alert_store
from fleet.store import commands as command_store
from fleet.store import exports as export_store
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store import ota as ota_store
from fleet.store import profiles as profile_store
from fleet.store import providers as provider_store
from fleet.store.scope import EVERYTHING, PLATFORM_ORG, Scope, set_scope
from fleet.web import auth

PASSWORD = "correct horse"
MARK = "zqa"  # every name of parking's objects carries it; environment's never do
REAL = {"node": "zqa-n1", "name": "zqa-secret", "user": "zqa-user", "token": "zqa-token"}
GHOST = {"node": "ghost-n1", "name": "ghost-nm", "user": "ghost-us", "token": "ghost-tk"}
GHOST_INT = 987654


@dataclass
class TwoOrgs:
    parking: int
    environment: int
    ints: dict  # parking's objects with integer ids, by the name routes and commands give them
    env_token: str  # an admin API token of environment
    node_login: tuple  # environment's node's OTA file login (user, password)


def seed(db, settings) -> TwoOrgs:
    now = time.time()
    parking = orgs.add_organisation(db, "parking")
    environment = orgs.add_organisation(db, "environment")
    set_scope(db, Scope(parking))
    node_store.enrol_node(db, "zqa-n1", name="zqa-name", tags=["zqa-tag"])
    node_store.enrol_node(db, "zqa-n2", name="zqa-other")
    node_store.set_place(db, "zqa-n1", 52.5, 13.4, "zqa-depot", actor="zqa-user")
    auth.create_user(db, "zqa-user", PASSWORD, "admin")
    auth.create_token(db, "zqa-token", "admin")
    cid, _seq = command_store.create_command(db, "zqa-n1", "reboot", 0, "zqa-user")
    provider_store.save_provider(db, {
        "name": "zqa-secret", "kind": "chirpstack", "host": "zqa.example", "port": 8883,
        "tls": 1, "application": "zqa-app", "tenant": None, "username": "zqa-login",
        "secret": None, "downlinks_per_day": 10, "created": now}, keep_secret=False)
    export_store.save_destination(db, {
        "name": "zqa-secret", "kind": "webhook", "url": "https://zqa.example/hook",
        "options": "{}", "secret": None, "nodes": '["zqa-n1"]', "tags": "[]", "enabled": 1,
        "created": now}, keep_secret=False, start_at_end=False)
    export_store.save_reader(db, "zqa-secret", "zqa-hash", ["zqa-n1"], [], now)
    profile_store.save_profile(db, {"name": "zqa-secret", "codec": "lpp",
                                    "description": "zqa-profile"})
    # parking's own signing key (the release below names it): environment may neither sign
    # with it, nor retire it, nor see it listed.
    releases.create_key(settings, "zqa-key", db, actor="zqa-user")
    ota_store.add_release(db, {"version": "9.9.9", "key": "zqa-key", "boards": ["zqa-board"],
                               "files": []}, "0" * 64, actor="zqa-user")
    rid = ota_store.add_rollout(db, "9.9.9", [1.0], 0.1, 0.1, {"tags": ["zqa-tag"]},
                                [("zqa-n1", 0, "pending", None)], actor="zqa-user")
    # parking's supplier, writing its node, and its claim token (named as the walks name an
    # object) with a claim a board made with it, waiting for parking's decision.
    intake.add_supplier(db, "zqa-secret")
    profile_store.set_supplier(db, "zqa-n1", "zqa-secret")
    identity_store.add_claim_token(db, "zqa-secret", "zqa-hash", "ESP32_GENERIC", 5, now + 3600,
                                   False, "zqa-user")
    claim_id = identity_store.add_claim(db, "zqa-secret", "zqa-client", "02:00:00:00:00:01",
                                        "ESP32_GENERIC")["id"]
    # A move parking asked the platform's organisation for: not environment's to see or decide.
    move = orgs.request_move(db, "zqa-n2", orgs.get_organisation(db, PLATFORM_ORG)["name"])
    set_scope(db, Scope(environment))
    node_store.enrol_node(db, "env-1", name="env-one")
    # environment's own node, whose OTA file login walks the OTA file server.
    ident = provision.register(db, settings, "env-ota", board="ESP32_GENERIC", sync=False)
    node_login = ("env-ota", file_password(ident["mqtt"]["password"]))
    auth.create_user(db, "envadmin", PASSWORD, "admin")
    env_token = auth.create_token(db, "env-token", "admin")
    set_scope(db, EVERYTHING)
    ing = Ingest(db)
    for node_id in ("zqa-n1", "env-1"):
        ing.add(f"pl/v1/{node_id}/up", frame(proto.TELEMETRY, 0, [(0, 0, 21.5)]), now - 30)
    ing.flush()
    alert_store.open_alert(db, "zqa-n1", "update_failed", "zqa-alert-detail")
    alert_id = db.conn.execute("SELECT id FROM alerts WHERE node_id = 'zqa-n1'").fetchone()[0]
    ints = {"alert_id": alert_id, "cid": cid, "rid": rid, "claim_id": claim_id,
            "org": parking, "request_id": move}
    return TwoOrgs(parking, environment, ints, env_token, node_login)


def snapshot(db) -> dict:
    """Every row of parking's objects, to compare before and after a walk."""
    set_scope(db, EVERYTHING)
    out = {}
    for table, where in (
        ("nodes", "id LIKE 'zqa%'"),
        ("alerts", "node_id LIKE 'zqa%'"),
        ("commands", "node_id LIKE 'zqa%'"),
        ("api_tokens", "name LIKE 'zqa%'"),
        ("users", "name LIKE 'zqa%'"),
        ("memberships", "user_id IN (SELECT id FROM users WHERE name LIKE 'zqa%')"),
        ("node_credentials", "node_id LIKE 'zqa%'"),
        ("readings", "node_id LIKE 'zqa%'"),
        ("organisations", "name = 'parking'"),
        ("providers", "name LIKE 'zqa%'"),
        ("export_destinations", "name LIKE 'zqa%'"),
        ("export_readers", "name LIKE 'zqa%'"),
        ("move_requests", "node_id LIKE 'zqa%'"),
        # By owner: the walks feed parking's node id as a name, so environment may own a
        # supplier called zqa-n1 (the route walk's supplier form makes one).
        ("suppliers", "org_id IN (SELECT id FROM organisations WHERE name = 'parking')"),
        ("claim_tokens", "org_id IN (SELECT id FROM organisations WHERE name = 'parking')"),
        ("claims", "token_id LIKE 'zqa%'"),
        ("device_profiles", "name LIKE 'zqa%'"),
        ("releases", "version = '9.9.9'"),
        ("ota_keys", "id LIKE 'zqa%'"),
        ("rollouts", "release = '9.9.9'"),
        ("rollout_nodes", "node_id LIKE 'zqa%'"),
    ):
        out[table] = sorted(map(repr, db.query(f"SELECT * FROM {table} WHERE {where}")))
    return out


def forget_ghost(db) -> None:
    """A walk's environment may register the never-existing node itself (the provisioning
    page and `fleet node add` take any free id), or a supplier by its name (the suppliers'
    form): drop them again, so it stays a name nothing has."""
    set_scope(db, EVERYTHING)
    for table, column in (("nodes", "id"), ("node_credentials", "node_id"),
                          ("transport_ids", "node_id"), ("suppliers", "name")):
        db.conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (GHOST["node"],))


def parking_and_environment(db) -> tuple[int, int]:
    """Two organisations with a node each (park-1, env-1); their ids. The scope is left at
    everything, as it was."""
    parking = orgs.add_organisation(db, "parking")
    environment = orgs.add_organisation(db, "environment")
    for org, node_id in ((parking, "park-1"), (environment, "env-1")):
        set_scope(db, Scope(org))
        node_store.enrol_node(db, node_id)
    set_scope(db, EVERYTHING)
    return parking, environment
