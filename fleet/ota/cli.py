"""`fleet keys`, `fleet release` and `fleet rollout`: OTA from the command line."""

import json
from pathlib import Path

import click

from fleet.console import one_line, open_store, when
from fleet.ota import releases as ota
from fleet.ota import rollouts
from fleet.settings import SettingsError, from_env
from fleet.store import ota as ota_store
from fleet.store.base import StoreError

# Releases read and write files: an OSError is a user's missing or unreadable file.
_friendly = one_line(SettingsError, StoreError, ValueError, OSError)


@click.group("keys")
def keys_group():
    """Release signing keys (ECDSA P-256) and the keys nodes trust.

    Each key belongs to one organisation (`fleet --org NAME keys ...`; without --org, the
    platform's). Every node trusts the platform's keys and its own organisation's.

    Example: fleet --org parking keys create parking-2026
    """


@keys_group.command("create")
@click.argument("key_id")
@_friendly
def keys_create(key_id):
    """Make a signing key of the organisation; its new nodes are provisioned to trust it.

    Key ids are unique across the platform (a node names its keys by id).

    Example: fleet --org parking keys create parking-2026
    """
    pub = ota.create_key(from_env(), key_id, open_store(), actor="cli")
    click.echo(f"key {key_id} created; public key {pub}")


@keys_group.command("list")
@_friendly
def keys_list():
    """List the organisation's keys and the platform's (marked), and which it signs with.

    Example: fleet --org parking keys list
    """
    for k in ota.list_keys(from_env(), open_store()):
        owner = "(platform)" if k["platform"] else k["org"]
        click.echo(f"{k['id']:<24} {'signs' if k['can_sign'] else 'verify-only':<12} "
                   f"{owner:<16} {k['public'][:24]}...")


@keys_group.command("retire")
@click.argument("key_id")
@click.option("--force", is_flag=True,
              help="Retire it even though some nodes trust no other key (they will need "
                   "reflashing to take updates again).")
@_friendly
def keys_retire(key_id, force):
    """Stop trusting a key of the organisation for new releases and new nodes.

    Nodes drop it when they confirm the next release (it carries the remaining keys). Refused
    while nodes trust only this key, unless --force. An organisation retires only its own keys.

    Example: fleet --org parking keys retire parking-2025
    """
    ota.retire_key(from_env(), key_id, open_store(), force, actor="cli")
    click.echo(f"key {key_id} retired; nodes stop trusting it with the next release they "
               "confirm")


@click.group("release")
def release_group():
    """Build, upload and list OTA releases.

    Example: fleet release build 0.2.0
    """


@release_group.command("build")
@click.argument("version")
@click.option("--board", "boards", multiple=True, help="Compatible board (repeat); default "
              "ESP32_GENERIC.")
@click.option("--key", "key_id", help="Signing key id, one of the organisation's own (default: "
              "its newest).")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=ota.FIRMWARE,
              show_default=True, help="The firmware tree to build from.")
@click.option("--no-upload", is_flag=True, help="Only write the bundle, do not store it.")
@click.option("--runtime", type=click.Path(dir_okay=False, path_type=Path),
              help="A MicroPython app image (.app-bin) the release also carries; only for boards "
                   "with OTA partitions (e.g. ESP32_GENERIC_OTA).")
@click.option("--downgrade-from", "downgrade_from", metavar="VERSION",
              help="Sign this older release as a downgrade for nodes on exactly VERSION (nodes "
                   "refuse older releases otherwise).")
@click.option("--for-org", "for_org", metavar="ORG",
              help="The platform operator only: sign with a platform key a release for this "
                   "organisation's nodes, carrying its keys (how nodes come to trust them).")
@_friendly
def release_build(version, boards, key_id, source, no_upload, runtime, downgrade_from, for_org):
    """Compile the app with mpy-cross, sign the manifest, write RELEASE_DIR/polylink-VERSION.tar
    and store the release in this fleet.

    Example: fleet release build 0.2.0 --board ESP32_GENERIC --board ESP32_GENERIC_OTA

    Example: fleet release build 0.3.0 --board ESP32_GENERIC_OTA --runtime mp-ota.app-bin

    Example: fleet release build 0.2.1 --source old-tree/firmware --downgrade-from 0.3.0

    Example: fleet release build 0.4.0 --key release-2026 --for-org parking
    """
    s = from_env()
    db = open_store()
    org = ota.organisation_id(db, for_org) if for_org else None
    path = ota.build(s, version, list(boards) or None, key_id, source, runtime=runtime,
                     downgrade_from=downgrade_from, db=db, for_org=org)
    click.echo(f"built {path}")
    if not no_upload:
        m = ota.upload(db, s, path.read_bytes(), actor="cli", for_org=org)
        click.echo(f"release {m['version']} stored: {len(m['files'])} files, key {m['key']}"
                   + (f", a downgrade for nodes on {m['downgrade_from']}"
                      if m.get("downgrade_from") else "")
                   + (f", MicroPython {m['runtime']['micropython']} runtime image "
                      f"({m['runtime']['size']} bytes)" if m.get("runtime") else ""))


@release_group.command("upload")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_friendly
def release_upload(bundle):
    """Check and store a release bundle (.tar) built elsewhere.

    Example: fleet release upload var/releases/polylink-0.2.0.tar
    """
    m = ota.upload(open_store(), from_env(), bundle.read_bytes(), actor="cli")
    click.echo(f"release {m['version']} stored: {len(m['files'])} files, key {m['key']}")


@release_group.command("list")
@_friendly
def release_list():
    """List stored releases.

    Example: fleet release list
    """
    for r in ota_store.list_releases(open_store()):
        click.echo(f"{r['version']:<10} {when(r['created'])} key {r['key_id']:<16} "
                   f"{r['files']} files {r['size']} B boards {','.join(r['boards'])}")


def _stages(text):
    out = []
    for part in text.split(","):
        pct, _, soak = part.partition(":")
        try:
            out.append({"percent": float(pct) if "." in pct else int(pct),
                        "soak": int(soak or 0)})
        except ValueError:
            raise click.BadParameter(f"{part!r}: expected PERCENT:SOAK_SECONDS") from None
    return out


@click.group("rollout")
def rollout_group():
    """Staged rollouts of a release to nodes.

    Example: fleet rollout create 0.2.0 --tag pilot
    """


@rollout_group.command("create")
@click.argument("version")
@click.option("--tag", "tags", multiple=True, help="Nodes with this tag (repeat: all tags).")
@click.option("--board", help="Nodes of this board.")
@click.option("--provider", help="Nodes on this provider.")
@click.option("--from-version", help="Nodes running this firmware version.")
@click.option("--from-micropython", help="Nodes running this MicroPython version (e.g. 1.24.1).")
@click.option("--node", "nodes", multiple=True, help="This node (repeat).")
@click.option("--stages", default="1:3600,10:3600,50:3600,100:0", show_default=True,
              help="PERCENT:SOAK_SECONDS,...")
@click.option("--max-failures", default=0.2, show_default=True,
              help="Fraction of failed nodes that pauses the rollout.")
@click.option("--max-health-drop", default=0.25, show_default=True,
              help="Extra fraction of unhealthy updated nodes that pauses it.")
@_friendly
def rollout_create(version, tags, board, provider, from_version, from_micropython, nodes, stages,
                   max_failures, max_health_drop):
    """Start a rollout of a stored release to the chosen nodes.

    Example: fleet rollout create 0.2.0 --tag district-3 --stages 10:600,100:0
    """
    target = {k: v for k, v in (("tags", list(tags)), ("board", board), ("provider", provider),
                                ("version", from_version), ("micropython", from_micropython),
                                ("nodes", list(nodes))) if v}
    db = open_store()
    rid = rollouts.create(db, version, target, _stages(stages), max_failures, max_health_drop,
                          actor="cli")
    s = rollouts.summary(db, rid)
    click.echo(f"rollout {rid}: {version} to {sum(s['totals'].values())} nodes "
               f"({s['skipped']} already on it)")


@rollout_group.command("list")
@_friendly
def rollout_list():
    """List rollouts, newest first.

    Example: fleet rollout list
    """
    db = open_store()
    for r in ota_store.list_rollouts(db):
        s = rollouts.summary(db, r["id"])
        click.echo(f"{r['id']:>4} {r['release']:<10} {r['state']:<8} stage {r['stage'] + 1}/"
                   f"{len(r['stages'])} {json.dumps(s['totals'])} {r['reason'] or ''}")


@rollout_group.command("show")
@click.argument("rid", type=int)
@_friendly
def rollout_show(rid):
    """Show a rollout's stages and each node's state.

    Example: fleet rollout show 3
    """
    db = open_store()
    s = rollouts.summary(db, rid)
    click.echo(f"rollout {rid}: {s['release']} {s['state']} stage {s['stage'] + 1}/"
               f"{len(s['stages'])} {s['reason'] or ''}")
    for i, (st, c) in enumerate(zip(s["stages"], s["stage_counts"], strict=True)):
        click.echo(f"  stage {i + 1} ({st['percent']} %, soak {st['soak']} s): {json.dumps(c)}")
    for n in ota_store.rollout_nodes(db, rid):
        click.echo(f"  {n['node_id']:<32} stage {n['stage'] + 1:<3} {n['state']:<12} "
                   f"{n['firmware_version'] or '-':<10} {n['micropython_version'] or '-':<8} "
                   f"{n['reason'] or ''}")


@rollout_group.command("add")
@click.argument("rid", type=int)
@click.argument("nodes", nargs=-1, required=True)
@_friendly
def rollout_add(rid, nodes):
    """Add nodes to a running or paused rollout; they join its current stage.

    Nodes already in it, already on its release, in another unfinished rollout or on a board the
    release does not support are skipped and counted.

    Example: fleet rollout add 3 lamp-0042 lamp-0043
    """
    db = open_store()
    done = rollouts.add_nodes(db, rid, list(nodes), actor="cli")
    skipped = rollouts.skipped_text(done["skipped"], ota_store.get_rollout(db, rid)["release"])
    click.echo(f"rollout {rid}: {done['added']} of {len(set(nodes))} nodes added"
               + (f"; skipped {skipped}" if skipped else ""))


def _action(name, doc):
    @rollout_group.command(name, help=doc)
    @click.argument("rid", type=int)
    @_friendly
    def command(rid):
        r = rollouts.act(open_store(), rid, name, actor="cli")
        click.echo(f"rollout {rid}: {r['state']}")

    return command


_action("pause", "Pause a running rollout: no new offers.\n\nExample: fleet rollout pause 3")
_action("resume", "Resume a paused rollout.\n\nExample: fleet rollout resume 3")
_action("abort", "Abort a rollout for good.\n\nExample: fleet rollout abort 3")
_action("retry", "Offer the release again to the failed nodes only.\n\n"
        "Example: fleet rollout retry 3")


@rollout_group.command("tick")
@_friendly
def rollout_tick():
    """Advance every running rollout once (`fleet run` does this every few seconds).

    Example: fleet rollout tick
    """
    s = from_env()
    pub = rollouts.Publisher(s)
    try:
        seen = rollouts.tick(open_store(), pub, rollouts.ota_url(s))
    finally:
        pub.close()
    click.echo(f"ticked {len(seen)} running rollout(s)")


def register(group: click.Group) -> None:
    """Attach the OTA commands to the `fleet` group."""
    for g in (keys_group, release_group, rollout_group):
        group.add_command(g)
