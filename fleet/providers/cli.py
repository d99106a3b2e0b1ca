"""`fleet provider ...`: configure LoRaWAN providers and run their ingest worker."""

import logging
import sys

import click

from fleet.console import open_store
from fleet.settings import from_env
from fleet.stopping import Stopping
from fleet.store import nodes as node_store
from fleet.store import providers as provider_store
from fleet.store.base import StoreError

from . import LORAWAN_KINDS, ProviderError, registry, worker


@click.group("provider")
def provider_group():
    """Configure LoRaWAN providers (The Things Stack, ChirpStack).

    Example: fleet provider list
    """


@provider_group.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(LORAWAN_KINDS), required=True,
              help="tts: The Things Stack v3 / The Things Network; chirpstack: ChirpStack v4.")
@click.option("--host", required=True, help="The provider's MQTT server.")
@click.option("--port", type=int, help="MQTT port [default: 1883, 8883 with --tls].")
@click.option("--tls/--no-tls", default=False, help="Connect with TLS (system CA roots).")
@click.option("--application", required=True, help="Application id on the provider.")
@click.option("--tenant", help="TTS tenant id [default: ttn].")
@click.option("--username", help="MQTT user name (TTS: {application}@{tenant}).")
@click.option("--password-stdin", is_flag=True,
              help="Read the MQTT password (TTS API key) from stdin instead of a prompt.")
@click.option("--no-password", is_flag=True,
              help="The broker needs no password (a stored one is removed).")
@click.option("--downlinks-per-day", type=int, default=registry.DEFAULT_DOWNLINKS_PER_DAY,
              show_default=True, help="Daily downlink budget per node on this provider.")
def provider_add(name, kind, host, port, tls, application, tenant, username, password_stdin,
                 no_password, downlinks_per_day):
    """Add or replace a provider; its password is stored encrypted and never shown again.

    Replacing one without a password keeps the stored password, unless the host, port or TLS
    changed: then the password must be given again.

    Example: fleet provider add ttn --kind tts --host eu1.cloud.thethings.network --tls
    --application city-sensors --username city-sensors@ttn
    """
    password = None
    if no_password:
        password = ""  # removes a stored one: it must not follow the provider to a new host
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password (API key)", hide_input=True, default="",
                                show_default=False) or None
    settings = from_env()
    db = open_store()
    cfg = {"name": name, "kind": kind, "host": host, "tls": tls, "application": application,
           "tenant": tenant, "username": username, "downlinks_per_day": downlinks_per_day}
    if port is not None:
        cfg["port"] = port
    try:
        p = registry.add(db, settings.data_dir, cfg, password, actor="cli")
    except registry.PasswordNeeded as e:
        raise click.ClickException(f"{e}: give it at the prompt or with --password-stdin") from None
    except ProviderError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"provider {p['name']} ({p['kind']}) at {p['host']}:{p['port']}"
               f"{' TLS' if p['tls'] else ''}, password {'set' if p['password_set'] else 'none'}")


@provider_group.command("list")
def provider_list():
    """List providers (passwords are never shown).

    Example: fleet provider list
    """
    db = open_store()
    for p in registry.list_all(db):
        click.echo(f"{p['name']:<16} {p['kind']:<11} {p['host']}:{p['port']:<6}"
                   f" app={p['application']} tenant={p['tenant'] or '-'}"
                   f" downlinks/day={p['downlinks_per_day']}"
                   f" password={'set' if p['password_set'] else 'none'}")


@provider_group.command("remove")
@click.argument("name")
def provider_remove(name):
    """Remove a provider.

    Example: fleet provider remove ttn
    """
    try:
        registry.remove(open_store(), name, actor="cli")
    except KeyError:
        raise click.ClickException(f"no provider named {name!r}") from None


@provider_group.command("link")
@click.argument("node_id")
@click.argument("provider")
@click.argument("dev_eui")
@click.option("--device-id", help="The provider's device id (TTS), if it is not the DevEUI.")
def provider_link(node_id, provider, dev_eui, device_id):
    """Give a node a transport identity (DevEUI) on a provider.

    Example: fleet provider link lamp-7 ttn 02A1B2C3D4E5F601 --device-id lamp-7
    """
    if len(dev_eui) != 16 or any(c not in "0123456789abcdefABCDEF" for c in dev_eui):
        raise click.ClickException(f"DevEUI must be 16 hex digits, got {dev_eui!r}")
    db = open_store()
    try:
        node_store.get_node(db, node_id)
        registry.get(db, provider)
    except KeyError as e:
        raise click.ClickException(f"unknown node or provider: {e}") from None
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    provider_store.link_identity(db, provider, dev_eui, node_id, device_id)
    click.echo(f"{node_id} is {dev_eui.upper()} on {provider}")


@provider_group.command("ingest")
@click.option("--only", multiple=True, help="Only this provider (repeatable).")
def provider_ingest(only):
    """Run the provider ingest worker: every provider's broker -> SQLite, until SIGTERM.

    Example: fleet provider ingest
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = Stopping().install()
    try:
        worker.run(from_env(), stop, names=set(only) or None)
    except KeyboardInterrupt:
        pass


def register(cli: click.Group) -> None:
    cli.add_command(provider_group)
