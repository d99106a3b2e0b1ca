"""The `fleet` command line: a thin layer over the library that turns its errors into one-liners."""

import functools
import logging
import sys
import time

import click

from fleet.settings import SettingsError, from_env
from fleet.store import alerts as alert_store
from fleet.store import identity as identity_store
from fleet.store import migrate
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store
from fleet.store import upkeep as upkeep_store
from fleet.store import users as user_store
from fleet.store.base import StoreError, connect
from fleet.store.migrate import open_db

# The roles of web/auth.py, repeated so `fleet --help` needs no Flask; a test keeps them equal.
ROLES = ("viewer", "technician", "operator", "admin")


def friendly(fn):
    """Turn the library's named exceptions into one-line click errors (no tracebacks)."""
    from fleet.broker.auth import BrokerAuthError
    from fleet.ingest import IngestError
    from fleet.nodes.commands import DownlinkError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SettingsError, StoreError, DownlinkError, IngestError, BrokerAuthError,
                ValueError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def open_store():
    """The fleet database named by DATA_DIR, migrated to the current schema."""
    return open_db(from_env().db_path)


def when(t) -> str:
    """Unix time as UTC ISO 8601, or '-' if never."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@click.group()
@click.version_option(package_name="polylink")
def cli():
    """Polylink fleet manager.

    Settings come from the environment: DATA_DIR, PORT, MQTT_PORT, MQTT_URL.

    Example: fleet nodes
    """


@cli.command("run")
@friendly
def run_command():
    """Run the broker, the web UI and API, and the ingest worker.

    Example: PORT=8080 fleet run
    """
    from fleet import serve  # lazily: it starts processes and is only needed here

    serve.main(from_env())


@cli.command("ingest")
@click.option("--batch-size", default=5000, show_default=True, help="Most messages per commit.")
@click.option("--batch-delay", default=0.05, show_default=True,
              help="Longest wait (s) for a batch to fill before committing it.")
@click.option("--mqtt-version", type=click.Choice(["3.1.1", "5"]), default="3.1.1",
              show_default=True,
              help="MQTT protocol version. 3.1.1 works with every broker (amqtt too) and takes the "
                   "worker's fast path; 5 costs ~2x CPU per message in paho.")
@friendly
def ingest_command(batch_size, batch_delay, mqtt_version):
    """Run the ingest worker: broker -> SQLite, until SIGTERM.

    Example: MQTT_PORT=1884 fleet ingest
    """
    import paho.mqtt.client as mqtt

    from fleet import ingest

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    protocol = mqtt.MQTTv5 if mqtt_version == "5" else mqtt.MQTTv311
    ingest.main(from_env(), batch_size=batch_size, batch_delay=batch_delay, protocol=protocol)


@cli.command("upkeep")
@click.option("--once", is_flag=True, help="Do one round and exit (for cron without `fleet run`).")
@click.option("--every", type=click.FloatRange(0.1, 3600), default=None,
              help="Seconds between rounds (default UPKEEP_EVERY, 30).")
@click.option("--broker-sync", is_flag=True,
              help="Also rewrite the broker's logins when a claim token expires (`fleet run` "
                   "passes it for the mosquitto it started).")
@friendly
def upkeep_command(once, every, broker_sync):
    """Periodic work: evaluate alerts, drop expired claim tokens, delete data past its retention.

    Example: fleet upkeep --once
    """
    import signal
    import threading

    from fleet import upkeep

    worker = upkeep.Upkeep(from_env(), every=every, broker=broker_sync)
    if once:
        db = open_store()
        try:
            done = worker.round(db)
        finally:
            db.conn.close()
        click.echo("alerts opened: " + ", ".join(f"{k} {n}" for k, n in done["alerts"].items()))
        if "prune" in done:
            click.echo("rows older than their retention deleted: "
                       + ", ".join(f"{table} {n}" for table, n in done["prune"].items()))
        return
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    worker.run(stopping, log=lambda text: print(time.strftime("%Y-%m-%dT%H:%M:%SZ ",
                                                              time.gmtime()) + text, flush=True))


@cli.group("db")
def db_group():
    """Database commands.

    Example: fleet db migrate
    """


@db_group.command("migrate")
@friendly
def db_migrate():
    """Bring the database schema up to date.

    Example: DATA_DIR=/srv/fleet fleet db migrate
    """
    db = connect(from_env().db_path)
    before, after = migrate.migrate(db)
    click.echo(f"schema version {before} -> {after}")


@cli.group("user")
def user_group():
    """Manage the people who can log in to the web UI.

    Example: fleet user add alice --role admin
    """


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="operator", show_default=True,
              help="viewer reads; technician also works on single nodes; operator also runs "
                   "bulk actions and rollouts; admin also manages users, tokens and providers "
                   "(docs/fleet.md).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@friendly
def user_add(name, role, password_stdin):
    """Create a user who can log in to the web UI.

    Example: echo 's3cret-pass' | fleet user add alice --role admin --password-stdin
    """
    from fleet.web import auth

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    auth.create_user(open_store(), name, password, role, actor="cli")
    click.echo(f"user {name} ({role}) added")


@user_group.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@friendly
def user_set_role(name, role):
    """Change what a user may do.

    Example: fleet user set-role bob technician
    """
    user_store.set_user_role(open_store(), name, role, actor="cli")
    click.echo(f"user {name} is now {role}")


@user_group.command("list")
@friendly
def user_list():
    """List users and their roles.

    Example: fleet user list
    """
    for u in user_store.list_users(open_store()):
        click.echo(f"{u['name']:<32} {u['role']:<10} {when(u['created'])}")


@cli.group("token")
def token_group():
    """Manage API bearer tokens.

    Example: fleet token create grafana
    """


@token_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="operator", show_default=True,
              help="What the token may do, as for users; give a read-only script viewer.")
@friendly
def token_create(name, role):
    """Create an API token and print it once; only its hash is stored.

    Example: fleet token create grafana --role viewer
    """
    from fleet.web import auth

    click.echo(auth.create_token(open_store(), name, role, actor="cli"))


@cli.command("nodes")
@friendly
def nodes_command():
    """List every node with its state.

    Example: fleet nodes
    """
    rows = node_store.list_nodes(open_store())
    if not rows:
        click.echo("no nodes yet")
        return
    click.echo(f"{'id':<32} {'state':<7} {'last seen':<20} {'firmware':<10} "
               f"{'micropython':<11} {'battery':>7}")
    for n in rows:
        battery = "-" if n["battery"] is None else f"{n['battery']:.2f} V"
        click.echo(f"{n['id']:<32} {'online' if n['online'] else 'offline':<7} "
                   f"{when(n['last_seen']):<20} {n['firmware_version'] or '-':<10} "
                   f"{n['micropython_version'] or '-':<11} {battery:>7}")


@cli.group("node")
def node_group():
    """Inspect one node.

    Example: fleet node show node-1
    """


@node_group.command("show")
@click.argument("node_id")
@friendly
def node_show(node_id):
    """Show a node's state and latest values.

    Example: fleet node show node-1
    """
    from fleet.nodes.senml import name_and_unit

    db = open_store()
    node = node_store.get_node(db, node_id)
    for key, value in node.items():
        if key in ("last_seen", "created", "status_at"):
            value = when(value)
        click.echo(f"{key:<17} {value}")
    for row in telemetry_store.latest_values(db, node_id):
        name, unit = name_and_unit(row["qid"], row["inst"])
        click.echo(f"{name:<17} {row['value']} {unit or ''} at {when(row['t'])}")


@node_group.command("add")
@click.argument("node_id", required=False)
@click.option("--board", help="Board name from boards/ (a radio board also gets LoRaWAN keys).")
@click.option("--name", help="Display name, e.g. where the node is mounted.")
@click.option("--mac", help="Hardware id (MAC) of the board, if known.")
@click.option("--json", "as_json", is_flag=True, help="Print the identity as JSON (for scripts).")
@friendly
def node_add(node_id, board, name, mac, as_json):
    """Register a node and mint its identity; its secrets are printed once.

    Without NODE_ID a random id is chosen. The broker accepts the node at once.

    Example: fleet node add street-lamp-0042 --board HELTEC_V3 --name "Main St 42"
    """
    import json

    from fleet.identity import provision

    identity = provision.register(open_store(), from_env(), node_id, board=board, name=name,
                                  mac=mac, actor="cli")
    if as_json:
        click.echo(json.dumps(identity))
        return
    click.echo(f"node {identity['node_id']} registered" + (f" ({board})" if board else ""))
    click.echo(f"  mqtt user      {identity['mqtt']['user']}")
    click.echo(f"  mqtt password  {identity['mqtt']['password']}")
    if identity["lorawan"]:
        for key in ("dev_eui", "join_eui", "app_key"):
            click.echo(f"  {key:<14} {identity['lorawan'][key]}")
    keys = ", ".join(identity["ota"]["keys"]) or "none yet (no DATA_DIR/ota/trusted_keys.json)"
    click.echo(f"  ota keys       {keys}")
    click.echo("These secrets are shown only once; `make image` or `make flash` writes them to the "
               "node.")


@node_group.command("revoke")
@click.argument("node_id")
@friendly
def node_revoke(node_id):
    """Revoke a node's credentials (lost or stolen); the broker drops and refuses it at once.

    Example: fleet node revoke street-lamp-0042
    """
    from fleet.identity import provision

    provision.revoke(open_store(), from_env(), node_id, actor="cli")
    click.echo(f"node {node_id} revoked")


@node_group.command("rotate")
@click.argument("node_id")
@friendly
def node_rotate(node_id):
    """Give a node a new MQTT password, printed once; the old one stops working.

    Example: fleet node rotate street-lamp-0042
    """
    from fleet.identity import provision

    password = provision.rotate(open_store(), from_env(), node_id, actor="cli")
    click.echo(f"node {node_id}: new mqtt password {password}")


@cli.group("claim")
def claim_group():
    """Zero-touch claims: tokens for generic images, and the claims boards made with them.

    Example: fleet claim token --board ESP32_GENERIC --uses 100 --hours 48
    """


@claim_group.command("token")
@click.option("--board", required=True, help="Board name from boards/ the claiming boards are.")
@click.option("--uses", default=1, show_default=True, help="How many boards may claim with it.")
@click.option("--hours", default=24.0, show_default=True, help="How long it is valid.")
@click.option("--auto-approve", is_flag=True,
              help="Issue identities without a technician's approval.")
@friendly
def claim_token(board, uses, hours, auto_approve):
    """Create a claim token for a generic image; printed once.

    Example: fleet claim token --board HELTEC_V3 --uses 100 --hours 48
    """
    from fleet.identity import claims

    token = claims.create_token(open_store(), from_env(), board, uses, hours, auto_approve,
                                actor="cli")
    click.echo(token)


@claim_group.command("list")
@click.option("--state", type=click.Choice(identity_store.CLAIM_STATES), default=None,
              help="Only claims in this state (pending: waiting for a decision).")
@friendly
def claim_list(state):
    """List claims, newest first: pending ones wait for `fleet claim approve`.

    Example: fleet claim list --state pending
    """
    for c in identity_store.list_claims(open_store(), state=state):
        click.echo(f"{c['id']:>5} {c['state']:<9} mac {c['mac']} {c['board']:<24} "
                   f"token {c['token_id']} {c['node_id'] or ''}")


@claim_group.command("approve")
@click.argument("claim_id", type=int)
@friendly
def claim_approve(claim_id):
    """Approve a pending claim; the board gets its identity when it next asks.

    Example: fleet claim approve 12
    """
    from fleet.identity import claims

    claims.decide(open_store(), claim_id, True, "cli")
    click.echo(f"claim {claim_id} approved")


@claim_group.command("reject")
@click.argument("claim_id", type=int)
@click.option("--reason", default="rejected by a technician", help="Told to the board.")
@friendly
def claim_reject(claim_id, reason):
    """Reject a pending claim.

    Example: fleet claim reject 12 --reason "not one of ours"
    """
    from fleet.identity import claims

    claims.decide(open_store(), claim_id, False, "cli", reason)
    click.echo(f"claim {claim_id} rejected")


@cli.group("command")
def command_group():
    """Send commands to nodes.

    Example: fleet command send node-1 identify
    """


@command_group.command("send")
@click.argument("node_id")
@click.argument("command", type=click.Choice(["reboot", "identify", "set-interval"]))
@click.argument("arg", required=False, type=int)
@friendly
def command_send(node_id, command, arg):
    """Send a command to a node over its downlink; prints the command id.

    Example: fleet command send node-1 set-interval 60
    """
    from fleet.nodes import commands as downlink

    cid = downlink.send_command(open_store(), from_env(), node_id, command.replace("-", "_"),
                                arg, created_by="cli")
    click.echo(f"command {cid} sent to {node_id}")


@command_group.command("config")
@click.argument("node_id")
@click.option("--interval", type=int, help="Sampling interval in seconds (1..86400).")
@click.option("--status-interval", type=int, help="STATUS interval in seconds (10..86400).")
@friendly
def command_config(node_id, interval, status_interval):
    """Send a CONFIG downlink (checked with the node's own limits); prints the command id.

    Example: fleet command config node-1 --interval 120 --status-interval 600
    """
    from fleet.nodes import commands as downlink

    cid = downlink.send_config(open_store(), from_env(), node_id, interval, status_interval,
                               created_by="cli")
    click.echo(f"config {cid} sent to {node_id}")


@cli.group("alerts")
def alerts_group():
    """Node alerts: offline, battery low, boot loop, bad frames, update failed.

    Example: fleet alerts check
    """


@alerts_group.command("check")
@friendly
def alerts_check():
    """Evaluate alerts now and list the open ones (`fleet run` does it every 30 s by itself).

    Example: fleet alerts check
    """
    db = open_store()
    now = time.time()
    opened = alert_store.evaluate_alerts(db, now)
    upkeep_store.mark_upkeep(db, "alerts", now, opened)
    click.echo("opened: " + ", ".join(f"{k} {n}" for k, n in opened.items()))
    for a in alert_store.list_alerts(db, limit=1000):
        click.echo(f"{when(a['opened'])} {a['node_id']:<32} {a['kind']:<13} {a['state']:<6} "
                   f"{a['detail'] or ''}")


@cli.command("bad-frames")
@click.argument("node_id", required=False)
@click.option("--limit", default=20, show_default=True, help="How many, newest first.")
@friendly
def bad_frames_command(node_id, limit):
    """List frames that failed to decode, kept for inspection.

    Example: fleet bad-frames node-1 --limit 5
    """
    db = open_store()
    if node_id is not None:
        node = node_store.get_node(db, node_id)
        click.echo(f"{node_id}: {node['bad_frames']} bad frames in total")
    for row in telemetry_store.bad_frames(db, node_id, limit):
        click.echo(f"{when(row['received_at'])} {row['node_id'] or '?':<20} {row['topic']} "
                   f"{row['payload'].hex()} {row['error']}")


# LoRaWAN providers: their commands live with their adapters (fleet/providers/cli.py).
from fleet.providers.cli import provider_group  # noqa: E402

cli.add_command(provider_group)
# OTA commands live in their own module (fleet/ota/cli.py).
from fleet.ota import cli as ota_cli  # noqa: E402

ota_cli.register(cli)
