"""`fleet nodes`, `fleet node show|export`, `fleet command`, `fleet bad-frames`: nodes, their
commands, and their readings in bulk."""

import json

import click

from fleet.console import FRIENDLY, one_line, open_store, when
from fleet.nodes import commands as downlink
from fleet.nodes import export
from fleet.nodes.senml import name_and_unit
from fleet.settings import from_env
from fleet.store import nodes as node_store
from fleet.store import telemetry as telemetry_store

friendly = one_line(*FRIENDLY, downlink.DownlinkError)


@click.command("nodes")
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


@click.group("node")
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
    db = open_store()
    node = node_store.get_node(db, node_id)
    for key, value in node.items():
        if key in ("last_seen", "created", "status_at"):
            value = when(value)
        click.echo(f"{key:<17} {value}")
    for row in telemetry_store.latest_values(db, node_id):
        name, unit = name_and_unit(row["qid"], row["inst"])
        click.echo(f"{name:<17} {row['value']} {unit or ''} at {when(row['t'])}")


@click.group("command")
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
    cid = downlink.send_config(open_store(), from_env(), node_id, interval, status_interval,
                               created_by="cli")
    click.echo(f"config {cid} sent to {node_id}")


@command_group.command("profile")
@click.argument("node_id")
@click.argument("name")
@click.option("--data", help='JSON object for encodeDownlink, e.g. \'{"interval": 900}\'.')
@friendly
def command_profile(node_id, name, data):
    """Send one of the commands of the node's device profile, encoded by its codec, through
    the LoRaWAN provider it was last heard on.

    Example: fleet command profile 70b3d57ed0001002 set-interval --data '{"interval": 900}'
    """
    try:
        fields = json.loads(data) if data else None
    except ValueError as e:
        raise click.ClickException(f"--data is not JSON: {e}") from None
    sent = downlink.send_profile_command(open_store(), from_env(), node_id, name, fields,
                                         actor="cli")
    click.echo(f"{name} sent to {node_id}: fPort {sent['fport']}, payload {sent['payload']}")


@click.command("bad-frames")
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
                   f"{(row['payload'] or b'').hex()} ({row['size']} bytes) {row['error']}")




def register(cli: click.Group) -> None:
    for command in (nodes_command, node_group, command_group, bad_frames_command):
        cli.add_command(command)


@node_group.command("export")
@click.option("--nodes", "node_ids", default="",
              help="Comma-separated node ids (default: every node).")
@click.option("--since", default=None, help="From (unix seconds or ISO 8601, e.g. 2026-01-31).")
@click.option("--until", default=None, help="Up to (a date alone: to its end).")
@click.option("--format", "fmt", type=click.Choice(sorted(export.FORMATS)), default="csv",
              show_default=True)
@click.option("-o", "--output", type=click.File("w", lazy=True), default="-",
              help="File to write (default: standard output).")
@friendly
def node_export(node_ids, since, until, fmt, output):
    """Write the readings of nodes in a time range as CSV or SenML JSON, streamed.

    Example: fleet node export --nodes node-1,node-2 --since 2026-01-01 -o january.csv
    """
    try:
        start = export.parse_time("--since", since)
        end = export.parse_time("--until", until, end_of_day=True)
    except export.ExportError as e:
        raise click.UsageError(str(e)) from None
    db = open_store()
    ids = [i.strip() for i in node_ids.split(",") if i.strip()] or sorted(
        node_store.known_node_ids(db))
    unknown = node_store.unknown_ids(db, ids, shared_too=True) if node_ids else []
    if unknown:
        raise click.ClickException(f"unknown node(s): {', '.join(unknown[:20])}")
    for chunk in export.stream(db, ids, start, end, fmt):
        output.write(chunk)
