"""`fleet node add|revoke|rotate|logins` and `fleet claim`: identities and zero-touch claims."""

import json
import sys
import time

import click

from fleet.broker import auth as brokerauth
from fleet.console import friendly, open_store
from fleet.identity import claims, provision, provision_cli
from fleet.nodes.cli import node_group
from fleet.settings import from_env
from fleet.store import identity as identity_store


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
    provision.revoke(open_store(), from_env(), node_id, actor="cli")
    click.echo(f"node {node_id} revoked")


@node_group.command("rotate")
@click.argument("node_id")
@friendly
def node_rotate(node_id):
    """Give a node a new MQTT password, printed once; the old one stops working.

    Example: fleet node rotate street-lamp-0042
    """
    password = provision.rotate(open_store(), from_env(), node_id, actor="cli")
    click.echo(f"node {node_id}: new mqtt password {password}")


@node_group.command("logins")
@click.argument("node_ids", nargs=-1)
@click.option("--board", default="ESP32_GENERIC", show_default=True,
              help="Board new nodes are registered with.")
@click.option("--known-stdin", is_flag=True,
              help='Read {"node": "password"} JSON from stdin: passwords the nodes hold already.')
@click.option("--actor", default="cli", show_default=True, help="Who the audit log names.")
@friendly
def node_logins(node_ids, board, known_stdin, actor):
    """Print, as JSON, the broker as the fleet reaches it and an MQTT login for each node.

    For simulated nodes and scripts. When the fleet's own broker checks logins, each NODE_ID is
    registered if new, and gets a new password unless --known-stdin gives one it still accepts.
    Without NODE_IDs nothing is registered.

    Example: fleet node logins sim-0000 sim-0001 --actor sim
    """
    settings = from_env()
    host, port, user, password = settings.mqtt_target()
    required = settings.mqtt_url is None and (
        settings.broker_dir / brokerauth.SERVICES_FILE).exists()
    passwords = {}
    if required and node_ids:
        known = json.loads(sys.stdin.read() or "{}") if known_stdin else {}
        passwords = provision.logins(open_store(), settings, list(node_ids), known, board, actor)
    click.echo(json.dumps({"data_dir": str(settings.data_dir), "host": host, "port": port,
                           "user": user, "password": password, "logins_required": required,
                           "logins": passwords}))


@click.group("claim")
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
    token = claims.create_token(open_store(), from_env(), board, uses, hours, auto_approve,
                                actor="cli")
    click.echo(token)


@claim_group.command("tokens")
@friendly
def claim_tokens():
    """List the organisation's claim tokens, newest first (never their secrets).

    Example: fleet claim tokens
    """
    for t in identity_store.list_claim_tokens(open_store()):
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t["expires"]))
        state = "revoked" if t["revoked_at"] else f"until {until}"
        click.echo(f"{t['id']}  {t['board']:<24} used {t['uses']}/{t['max_uses']}  {state}"
                   + ("  auto-approve" if t["auto_approve"] else ""))


@claim_group.command("revoke")
@click.argument("token_id")
@friendly
def claim_revoke(token_id):
    """Revoke a claim token: no board claims with it any more (the broker refuses it at once);
    nodes already claimed with it stay.

    Example: fleet claim revoke ct1a2b3c4d
    """
    claims.revoke_token(open_store(), from_env(), token_id, actor="cli")
    click.echo(f"claim token {token_id} revoked")


@claim_group.command("list")
@click.option("--state", type=click.Choice(identity_store.CLAIM_STATES), default=None,
              help="Only claims in this state (pending: waiting for a decision).")
@friendly
def claim_list(state):
    """List claims, newest first: pending ones wait for `fleet claim approve`.

    CONFLICT marks a claim for a MAC that other claims (listed) also ask for: approve the one
    from the real board; that rejects the others.

    Example: fleet claim list --state pending
    """
    for c in identity_store.list_claims(open_store(), state=state):
        rivals = (f" CONFLICT with claim {', '.join(map(str, c['rivals']))}"
                  if c["rivals"] else "")
        click.echo(f"{c['id']:>5} {c['state']:<9} mac {c['mac']} {c['board']:<24} "
                   f"token {c['token_id']} claim id {c['client_id']} {c['node_id'] or ''}"
                   f"{rivals}")


@claim_group.command("approve")
@click.argument("claim_id", type=int)
@friendly
def claim_approve(claim_id):
    """Approve a pending claim; the board gets its identity when it next asks.

    In a conflict this rejects the other claims for the MAC and revokes an identity one got.

    Example: fleet claim approve 12
    """
    revoked = claims.decide(open_store(), claim_id, True, "cli", settings=from_env())
    click.echo(f"claim {claim_id} approved"
               + (f"; revoked {', '.join(revoked)} (the other claim's identity)" if revoked
                  else ""))


@claim_group.command("reject")
@click.argument("claim_id", type=int)
@click.option("--reason", default="rejected by a technician", help="Told to the board.")
@friendly
def claim_reject(claim_id, reason):
    """Reject a pending claim.

    Example: fleet claim reject 12 --reason "not one of ours"
    """
    claims.decide(open_store(), claim_id, False, "cli", reason, settings=from_env())
    click.echo(f"claim {claim_id} rejected")




def register(cli: click.Group) -> None:
    """The claim and provision groups; the node commands above join `fleet node` (nodes/cli.py)."""
    cli.add_command(claim_group)
    cli.add_command(provision_cli.cli)
