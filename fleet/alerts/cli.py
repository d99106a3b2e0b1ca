"""`fleet alerts check`: evaluate alerts now, outside `fleet run`."""

import time

import click

from fleet.console import friendly, open_store, when
from fleet.store import alerts as alert_store
from fleet.store import upkeep as upkeep_store


@click.group("alerts")
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




def register(cli: click.Group) -> None:
    cli.add_command(alerts_group)
