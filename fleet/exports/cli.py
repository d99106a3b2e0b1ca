"""`fleet export ...`: register export destinations, see their state, run the export worker."""

import json
import logging
import sys

import click

from fleet.console import friendly, open_store
from fleet.settings import from_env
from fleet.stopping import Stopping

from . import ADAPTERS, readers, registry, worker


@click.group("export")
def export_group():
    """Send every reading out in open standards (webhook, MQTT, NGSI-LD, ...).

    Example: fleet export list
    """


@export_group.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(sorted(ADAPTERS)), required=True,
              help="What the destination speaks (docs/integrations.md).")
@click.option("--url", required=True, help="Where to send: https://... (mqtt: the broker).")
@click.option("--node", "nodes", multiple=True, help="Only this node (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only nodes with this tag (repeatable).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A kind's own option (repeatable; VALUE is JSON or a string).")
@click.option("--secret-stdin", is_flag=True,
              help="Read the secret (HMAC key, password, token) from stdin, not a prompt.")
@click.option("--no-secret", is_flag=True, help="The destination needs no secret.")
@click.option("--from-start", is_flag=True,
              help="Also send every reading stored before now (a new destination only).")
@friendly
def export_add(name, kind, url, nodes, tags, options, secret_stdin, no_secret, from_start):
    """Add or replace a destination; its secret is stored encrypted and never shown again.

    Replacing one without a secret keeps the stored secret, unless the kind or URL changed:
    then it must be given again.

    Example: fleet export add city-hook --kind webhook --url https://city.example/hook
    --tag park --secret-stdin
    """
    opts = {}
    for kv in options:
        key, sep, value = kv.partition("=")
        if not sep:
            raise click.ClickException(f"--option must be KEY=VALUE, got {kv!r}")
        try:
            opts[key] = json.loads(value)
        except ValueError:
            opts[key] = value
    if no_secret or ADAPTERS[kind].SECRET is None:
        secret = ""  # removes a stored one; a kind without a secret never asks
    elif secret_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        secret = click.prompt("Secret", hide_input=True, default="", show_default=False) or None
    settings = from_env()
    db = open_store()
    cfg = {"name": name, "kind": kind, "url": url, "nodes": list(nodes), "tags": list(tags),
           "options": opts}
    try:
        d = registry.add(db, settings.data_dir, cfg, secret, actor="cli", from_start=from_start)
    except registry.SecretNeeded as e:
        raise click.ClickException(f"{e}: give it at the prompt or with --secret-stdin") from None
    click.echo(f"destination {d['name']} ({d['kind']}) -> {d['url']},"
               f" secret {'set' if d['secret_set'] else 'none'}, {d['behind']} readings to send")


@export_group.command("list")
@friendly
def export_list():
    """List destinations and their state (secrets are never shown).

    Example: fleet export list
    """
    for d in registry.list_all(open_store()):
        click.echo(f"{d['name']:<16} {d['kind']:<12} {d['state']:<12} behind={d['behind']}"
                   f" delivered={d['delivered']} refused={d['refused']} {d['url']}"
                   + (f"  last error: {d['last_error']}" if d["last_error"] else ""))


@export_group.command("pause")
@click.argument("name")
@friendly
def export_pause(name):
    """Stop sending to a destination; its readings wait in the store until it is resumed.

    Example: fleet export pause city-hook
    """
    _set_enabled(name, False)


@export_group.command("resume")
@click.argument("name")
@friendly
def export_resume(name):
    """Send to a paused destination again, from where it stopped.

    Example: fleet export resume city-hook
    """
    _set_enabled(name, True)


def _set_enabled(name: str, on: bool) -> None:
    try:
        registry.set_enabled(open_store(), name, on, actor="cli")
    except KeyError:
        raise click.ClickException(f"no export destination named {name!r}") from None


@export_group.command("remove")
@click.argument("name")
@friendly
def export_remove(name):
    """Remove a destination (its cursor and refused items go with it).

    Example: fleet export remove city-hook
    """
    try:
        registry.remove(open_store(), name, actor="cli")
    except KeyError:
        raise click.ClickException(f"no export destination named {name!r}") from None


@export_group.command("run")
@click.option("--only", multiple=True, help="Only this destination (repeatable).")
@click.option("--batch", type=click.IntRange(1, 10000), default=worker.BATCH, show_default=True,
              help="Readings (and as many events) per send.")
def export_run(only, batch):
    """Run the export worker: every destination's backlog, until SIGTERM.

    Example: fleet export run
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = Stopping().install()
    try:
        worker.run(from_env(), stop, names=set(only) or None, batch=batch)
    except KeyboardInterrupt:
        pass


@export_group.group("reader")
def reader_group():
    """Integrators' read-only MQTT logins for pl/v1/data/{node} on the fleet's broker.

    Example: fleet export reader list
    """


@reader_group.command("add")
@click.argument("name")
@click.option("--node", "nodes", multiple=True, help="Only this node's topic (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Nodes with this tag (repeatable).")
@friendly
def reader_add(name, nodes, tags):
    """Create a read-only login (or give it a new password); the password is shown once.

    Example: fleet export reader add node-red --tag park
    """
    r = readers.add(open_store(), from_env().broker_dir, name, nodes, tags, actor="cli")
    click.echo(f"login {r['username']} password {r['password']}")
    click.echo("This password is shown only once. Subscribe to pl/v1/data/+ (or your nodes).")


@reader_group.command("list")
@friendly
def reader_list():
    """List read-only logins and the topics each may read (never a password).

    Example: fleet export reader list
    """
    for r in readers.list_all(open_store()):
        click.echo(f"{r['username']:<32} {' '.join(r['topics']) or '(no nodes match yet)'}")


@reader_group.command("remove")
@click.argument("name")
@friendly
def reader_remove(name):
    """Remove a read-only login; the broker refuses it from now on.

    Example: fleet export reader remove node-red
    """
    try:
        readers.remove(open_store(), from_env().broker_dir, name, actor="cli")
    except KeyError:
        raise click.ClickException(f"no reader login named {name!r}") from None


def register(cli: click.Group) -> None:
    cli.add_command(export_group)
