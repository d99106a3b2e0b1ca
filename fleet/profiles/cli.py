"""`fleet profile ...`, `fleet device ...`, `fleet supplier ...`: other suppliers' devices."""

import json

import click

from fleet.broker import auth as brokerauth
from fleet.console import friendly, open_store
from fleet.senml import intake
from fleet.settings import from_env
from fleet.store import profiles as profile_store
from fleet.store import suppliers as supplier_store
from fleet.store.scope import scope_of

from . import CODECS, POLYLINK, devices, service


@click.group("profile")
def profile_group():
    """Device profiles: how each kind of device's payload becomes readings.

    Example: fleet profile list
    """


@profile_group.command("list")
@friendly
def profile_list():
    """Every profile with its codec and number of nodes.

    Example: fleet profile list
    """
    for p in profile_store.list_profiles(open_store()):
        every = f"every {p['interval']} s" if p["interval"] else ""
        click.echo(f"{p['name']:24} {p['codec']:12} v{p['version']:<4} {p['nodes']:6} nodes"
                   f"  {every}")


@profile_group.command("show")
@click.argument("name")
@friendly
def profile_show(name):
    """A profile as JSON (its codec source included).

    Example: fleet profile show acme-weather
    """
    click.echo(json.dumps(profile_store.get_profile(open_store(), name), indent=2))


def _body(name, codec, source, fields, interval, description) -> dict:
    return {"name": name, "codec": codec, "source": source.read() if source else None,
            "fields": json.loads(fields.read()) if fields else [], "interval": interval,
            "description": description}


@profile_group.command("set")
@click.argument("name")
@click.option("--codec", type=click.Choice([c for c in CODECS if c != POLYLINK]),
              required=True, help="lpp, js (with --source), passthrough or senml.")
@click.option("--source", type=click.File(), help="The JavaScript codec (js only).")
@click.option("--fields", type=click.File(), help="JSON file: the field mapping.")
@click.option("--interval", type=int, help="Expected reporting interval in s.")
@click.option("--description")
@friendly
def profile_set(name, codec, source, fields, interval, description):
    """Create or change a profile (audited); a codec change applies to new frames only.

    Example: fleet profile set acme-weather --codec js --source acme.js --fields acme.json
    --interval 600
    """
    p = service.save(open_store(), _body(name, codec, source, fields, interval, description),
                     actor="cli")
    click.echo(f"profile {p['name']} saved (version {p['version']})")


@profile_group.command("try")
@click.option("--codec", type=click.Choice(["lpp", "js"]), required=True)
@click.option("--source", type=click.File(), help="The JavaScript codec (js only).")
@click.option("--fields", type=click.File(), help="JSON file: the field mapping.")
@click.option("--node", help="Also decode this node's last 100 stored payloads.")
@click.option("--fport", type=int, default=1, show_default=True)
@click.argument("payloads", nargs=-1)
@friendly
def profile_try(codec, source, fields, node, fport, payloads):
    """Decode payloads (hex or base64) with a codec before saving it; nothing is stored.

    Example: fleet profile try --codec js --source acme.js --fport 2 02D227953010B8
    """
    out = service.try_codec(open_store(), _body("draft", codec, source, fields, None, None),
                            payloads, node, fport)
    click.echo(json.dumps(out, indent=2))
    if out["bad"]:
        raise click.ClickException(f"{out['bad']} payload(s) did not decode")


@profile_group.command("remove")
@click.argument("name")
@friendly
def profile_remove(name):
    """Remove a profile no node has.

    Example: fleet profile remove old-sensor
    """
    profile_store.delete_profile(open_store(), name, actor="cli")
    click.echo(f"profile {name} removed")


@profile_group.command("assign")
@click.argument("node_id")
@click.argument("profile")
@friendly
def profile_assign(node_id, profile):
    """Give a node a profile.

    Example: fleet profile assign 70b3d57ed0001001 acme-weather
    """
    profile_store.assign(open_store(), node_id, profile, actor="cli")
    click.echo(f"{node_id}: profile {profile}")


@click.group("device")
def device_group():
    """Register other suppliers' LoRaWAN devices by DevEUI.

    Example: fleet device import devices.csv
    """


@device_group.command("add")
@click.argument("code")
@click.option("--profile", required=True)
@click.option("--name")
@click.option("--lat", type=float)
@click.option("--lon", type=float)
@friendly
def device_add(code, profile, name, lat, lon):
    """Register one device by DevEUI or its QR code's text (TR005 LW:D0:...).

    Example: fleet device add 70B3D57ED0001001 --profile acme-weather --name "Roof"
    """
    click.echo(devices.register(open_store(), code, profile, name, lat, lon, actor="cli"))


@device_group.command("import")
@click.argument("csv_file", type=click.File(encoding="utf-8-sig"))
@friendly
def device_import(csv_file):
    """Register the devices of a CSV (dev_eui,name,profile,position or lat,lon).

    Example: fleet device import devices.csv
    """
    results = devices.import_csv(open_store(), csv_file.read(), actor="cli")
    for r in results:
        click.echo(f"line {r['line']}: " + (r["node_id"] if r["ok"] else f"ERROR {r['error']}"))
    bad = sum(1 for r in results if not r["ok"])
    if bad:
        raise click.ClickException(f"{bad} of {len(results)} rows not registered")


@click.group("supplier")
def supplier_group():
    """Suppliers whose clouds post SenML for their own nodes.

    Example: fleet supplier add acme
    """


@supplier_group.command("add")
@click.argument("name")
@friendly
def supplier_add(name):
    """Create a supplier and print its token (shown once; it writes only to its nodes), its
    password too as MQTT user supplier.NAME on the fleet's broker.

    Example: fleet supplier add acme
    """
    db = open_store()
    click.echo(intake.add_supplier(db, name, actor="cli"))
    brokerauth.sync(db, from_env().broker_dir)


@supplier_group.command("assign")
@click.argument("node_id")
@click.argument("supplier")
@friendly
def supplier_assign(node_id, supplier):
    """Let a supplier post SenML for a node (both of the organisation the command acts for).

    Example: fleet supplier assign 70b3d57ed0001001 acme
    """
    db = open_store()
    profile_store.set_supplier(db, node_id, supplier, actor="cli")
    brokerauth.sync(db, from_env().broker_dir)  # its broker login may now write the node's SenML
    click.echo(f"{node_id}: supplier {supplier}")


@supplier_group.command("list")
@friendly
def supplier_list():
    """The organisation's suppliers and the nodes each may write (never a token); the
    platform's sees every organisation's.

    Example: fleet supplier list
    """
    db = open_store()
    mine = scope_of(db).org_id  # the platform's list holds every organisation's: say whose
    for s in supplier_store.list_suppliers(db):
        click.echo(f"{s['name']:24} {', '.join(s['nodes']) or '(no nodes)'}"
                   + (f"  (of {s['org']})" if s["org_id"] != mine else ""))


@supplier_group.command("rotate")
@click.argument("name")
@friendly
def supplier_rotate(name):
    """Give a supplier a new token, printed once; the old one stops working at once (HTTPS and
    the broker), so hand the new one to the supplier's cloud now.

    Example: fleet supplier rotate acme
    """
    db = open_store()
    token = intake.rotate_supplier(db, name, actor="cli")
    brokerauth.sync(db, from_env().broker_dir)
    click.echo(token)


@supplier_group.command("revoke")
@click.argument("name")
@friendly
def supplier_revoke(name):
    """Delete a supplier: its token stops working on HTTPS and the broker; its nodes stay,
    with no supplier.

    Example: fleet supplier revoke acme
    """
    db = open_store()
    nodes = supplier_store.revoke_supplier(db, name, actor="cli")
    brokerauth.sync(db, from_env().broker_dir)
    click.echo(f"supplier {name} revoked; {len(nodes)} node(s) released")


@supplier_group.command("release")
@click.argument("node_id")
@friendly
def supplier_release(node_id):
    """Take a node back from its supplier (no supplier may post its SenML then).

    Example: fleet supplier release 70b3d57ed0001001
    """
    db = open_store()
    profile_store.set_supplier(db, node_id, None, actor="cli")
    brokerauth.sync(db, from_env().broker_dir)
    click.echo(f"{node_id}: no supplier")


def register(cli: click.Group) -> None:
    cli.add_command(profile_group)
    cli.add_command(device_group)
    cli.add_command(supplier_group)
