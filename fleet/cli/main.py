"""The `fleet` command: the processes (run, ingest, upkeep) and the database; every feature adds
its own commands (its cli.py), registered at the bottom."""

import logging
import time

import click

from fleet import console, ingest, mqtt, upkeep
from fleet.alerts import cli as alerts_cli
from fleet.console import friendly, open_store, platform_command
from fleet.exports import cli as exports_cli
from fleet.identity import cli as identity_cli
from fleet.nodes import cli as nodes_cli
from fleet.operations import cli as operations_cli
from fleet.organisations import cli as organisations_cli
from fleet.ota import cli as ota_cli
from fleet.profiles import cli as profiles_cli
from fleet.providers import cli as providers_cli
from fleet.settings import from_env
from fleet.stopping import Stopping
from fleet.store import copy as store_copy
from fleet.store import migrate
from fleet.store.base import connect
from fleet.tls import cli as tls_cli
from fleet.web import cli as web_cli


@click.group()
@click.version_option(package_name="polylink")
@click.option("--org", envvar="FLEET_ORG", default=None, metavar="NAME",
              help="Act for this organisation only: see its nodes and objects, and make new ones "
                   "in it (env FLEET_ORG). Without it: the whole fleet, as the platform operator.")
def cli(org):
    """Polylink fleet manager.

    Settings come from the environment: DATA_DIR, PORT, MQTT_PORT, MQTT_URL.

    Example: fleet nodes
    """
    console.ORG = org


@cli.command("run")
@friendly
def run_command():
    """Run the broker, the web UI and API, and the ingest worker.

    Example: PORT=8080 fleet run
    """
    from fleet import serve  # here, not at the top: it loads Flask and waitress (start-up time)

    serve.main(from_env())


@cli.command("ingest")
@click.option("--batch-size", default=5000, show_default=True, help="Most messages per commit.")
@click.option("--batch-delay", default=0.05, show_default=True,
              help="Longest wait (s) for a batch to fill before committing it.")
@click.option("--mqtt-version", type=click.Choice(["3.1.1", "5"]), default="3.1.1",
              show_default=True,
              help="MQTT protocol version. 3.1.1 works with every broker (amqtt too) and takes the "
                   "worker's fast path; 5 costs ~2x CPU per message in paho.")
@click.option("--share", "share_group", default=None, metavar="GROUP",
              help="Join the shared subscription $share/GROUP/...: run N workers with the same "
                   "GROUP and a --client-id each, and the broker splits the messages among them.")
@click.option("--client-id", default=ingest.CLIENT_ID, show_default=True,
              help="MQTT client id: the broker keeps this worker's unacked messages under it "
                   "while it restarts, so each of N workers needs its own, the same every start.")
@friendly
def ingest_command(batch_size, batch_delay, mqtt_version, share_group, client_id):
    """Run the ingest worker: broker -> store (SQLite or DATABASE_URL), until SIGTERM.

    Example: MQTT_PORT=1884 fleet ingest
    Example: fleet ingest --share ingest --client-id ingest-2   (one of N workers)
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    protocol = mqtt.MQTTv5 if mqtt_version == "5" else mqtt.MQTTv311
    ingest.main(from_env(), batch_size=batch_size, batch_delay=batch_delay, protocol=protocol,
                share_group=share_group, client_id=client_id)


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
    worker = upkeep.Upkeep(from_env(), every=every, broker=broker_sync)
    if once:
        db = open_store()
        try:
            done = worker.round(db)
        finally:
            db.conn.close()
        if not done:
            click.echo("another upkeep worker is doing a round right now; nothing done")
            return
        click.echo("alerts opened: " + ", ".join(f"{k} {n}" for k, n in done["alerts"].items()))
        if "prune" in done:
            click.echo("rows older than their retention deleted: "
                       + ", ".join(f"{table} {n}" for table, n in done["prune"].items()))
        return
    stopping = Stopping().install()
    worker.run(stopping, log=lambda text: print(time.strftime("%Y-%m-%dT%H:%M:%SZ ",
                                                              time.gmtime()) + text, flush=True))


@cli.group("db")
def db_group():
    """Database commands.

    Example: fleet db migrate
    """
    platform_command()


@db_group.command("migrate")
@friendly
def db_migrate():
    """Bring the database schema up to date (SQLite in DATA_DIR, or DATABASE_URL).

    Example: DATABASE_URL=postgresql://fleet@db.example/fleet fleet db migrate
    """
    db = connect(from_env().db_path)
    try:
        before, after = migrate.migrate(db)
    finally:
        db.conn.close()
    click.echo(f"schema version {before} -> {after}")


@db_group.command("copy")
@click.option("--to", "url", required=True, metavar="URL",
              help="The PostgreSQL database to fill: new and empty (postgresql://...).")
@friendly
def db_copy(url):
    """Copy the SQLite store of DATA_DIR into an empty PostgreSQL database, and compare.

    Stop the ingest workers first (the broker keeps their messages), copy, then start them with
    DATABASE_URL set: nothing is lost. Every table's row count and checksum are compared.

    Example: DATA_DIR=/srv/fleet fleet db copy --to postgresql://fleet@db/fleet
    """
    settings = from_env()
    if settings.database_url:
        raise click.ClickException("unset DATABASE_URL: the source is DATA_DIR's SQLite file")
    source = migrate.open_db(settings.db_path)
    target = migrate.open_db(url)
    try:
        report = store_copy.copy_store(source, target)
    finally:
        source.conn.close()
        target.conn.close()
    for table, (rows, checksum) in report.items():
        click.echo(f"{table:24} {rows:>10} rows  sha256-sum {checksum[:16]}  same on both")


@cli.command("migrate")
@friendly
@click.pass_context
def migrate_command(ctx):
    """Bring the database schema up to date: the same as `fleet db migrate`.

    Example: DATA_DIR=/srv/fleet fleet migrate
    """
    platform_command()
    ctx.invoke(db_migrate)


for feature in (web_cli, nodes_cli, identity_cli, alerts_cli, providers_cli, ota_cli,
                operations_cli, exports_cli, profiles_cli, tls_cli, organisations_cli):
    feature.register(cli)
