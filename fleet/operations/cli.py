"""`fleet backup`, `fleet restore` and `fleet doctor`: running a deployment."""

from pathlib import Path

import click

from fleet.console import one_line, platform_command
from fleet.settings import SettingsError, from_env

_friendly = one_line(SettingsError, ValueError, OSError)


@click.command("backup")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_friendly
def backup_command(file):
    """Write the whole fleet state (database, broker logins, keys, releases) to one file.

    Safe while the fleet runs. FILE defaults to polylink-backup-<UTC time>.tar.gz here; it is
    made readable by you only, as it holds every secret of the fleet. With DATABASE_URL the
    database is dumped by pg_dump (PostgreSQL's client tools; PG_BINDIR names their folder).

    Example: DATA_DIR=/var/lib/polylink fleet backup /srv/backups/fleet.tar.gz
    """
    platform_command()
    from fleet.operations import backup

    dest = file or Path(backup.default_name())
    try:
        manifest = backup.create(from_env(), dest)
    except backup.BackupError as e:
        raise click.ClickException(str(e)) from None
    size = sum(f["size"] for f in manifest["files"].values())
    click.echo(f"backup written to {dest}: {len(manifest['files'])} files, {size} bytes "
               f"before compression, schema version {manifest['schema']}")


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True,
              help="Restore over a DATA_DIR that holds something; its contents are moved aside "
                   "to DATA_DIR.before-restore-<time>, not deleted.")
@_friendly
def restore_command(file, replace):
    """Put a backup made by `fleet backup` in place as DATA_DIR, all or nothing.

    The fleet must be stopped. A damaged backup, or one from a newer Polylink, is refused and
    DATA_DIR is left as it was. With DATABASE_URL the dump goes into that database in one
    transaction (pg_restore and psql); --replace keeps its old contents as a dump beside DATA_DIR.

    Example: DATA_DIR=/var/lib/polylink fleet restore fleet.tar.gz --replace
    """
    platform_command()
    from fleet.operations import backup

    settings = from_env()
    try:
        manifest = backup.restore(settings, file, replace=replace)
    except backup.BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"restored {len(manifest['files'])} files into {settings.data_dir} "
               f"(schema version {manifest['schema']})")
    if manifest["kept_aside"]:
        click.echo(f"the previous contents are in {manifest['kept_aside']}")


@click.command("doctor")
@_friendly
def doctor_command():
    """Check this deployment and say in plain words what is wrong; exit 1 if anything is.

    Checks certificates and their expiry, that the web UI and the broker answer, that the
    broker's logins match the database, the database schema, disk space and the clock.
    Warnings (a certificate to renew soon) are printed but do not fail.

    Example: DATA_DIR=/var/lib/polylink fleet doctor
    """
    platform_command()
    from fleet.operations import doctor

    findings = doctor.run(doctor.deployment(from_env()))
    for f in findings:
        click.echo(f"{f.level:<4}  {f.check:<16} {f.text}")
    failed = [f for f in findings if f.level == doctor.FAIL]
    warned = [f for f in findings if f.level == doctor.WARN]
    if failed:
        click.echo(f"{len(failed)} problem(s), {len(warned)} warning(s)")
        raise SystemExit(1)
    click.echo(f"no problems{f', {len(warned)} warning(s)' if warned else ''}")


def register(group: click.Group) -> None:
    """Attach the deployment commands to the `fleet` group."""
    for command in (backup_command, restore_command, doctor_command):
        group.add_command(command)
