"""`fleet tls`: make, use, show and renew the certificates the broker serves nodes with."""

import click

from fleet.console import friendly, platform_command
from fleet.settings import from_env, node_tls_from_env
from fleet.tls import certs, serving


def _dir():
    return node_tls_from_env(from_env().data_dir).tls_dir


def _serve(d) -> None:
    """The running broker takes the new certificate now (the web server notices by itself)."""
    click.echo(serving.reload_broker(from_env().broker_dir, d / certs.SERVER_CERT))


@click.group("tls")
def tls_group():
    """Certificates for MQTT over TLS and OTA over HTTPS (docs/operations.md).

    Example: fleet tls init --name fleet.example.org --name 192.168.1.10
    """
    platform_command()


@tls_group.command("init")
@click.option("--name", "names", multiple=True, required=True,
              help="A DNS name or IP address nodes reach the fleet by (repeat for more).")
@click.option("--days", default=certs.SERVER_DAYS, show_default=True,
              help="Days the server certificate is valid.")
@click.option("--force", is_flag=True, help="Replace operator-given certificates.")
@friendly
def tls_init(names, days, force):
    """Make a private CA (once) and a server certificate for the names given.

    Nodes get the CA (ca.pem) in their image. A running broker serving TLS reloads the new
    certificate at once; one started before TLS was set up needs a restart of `fleet run`.

    Example: fleet tls init --name fleet.example.org --name 192.168.1.10
    """
    d = certs.init(_dir(), names, days, force)
    _show(d)
    _serve(d)


@tls_group.command("use")
@click.option("--cert", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The server certificate (PEM), then its intermediate certificates.")
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Its private key (PEM, no passphrase).")
@click.option("--ca", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The root certificate nodes should trust (PEM).")
@friendly
def tls_use(cert, key, ca):
    """Serve nodes with a certificate issued elsewhere (your organisation's CA).

    Run it again with each renewed certificate (e.g. from your ACME client's deploy hook): the
    running broker reloads it at once.

    Example: fleet tls use --cert fleet.pem --key fleet.key --ca city-root.pem
    """
    d = certs.use(_dir(), cert, key, ca)
    _show(d)
    _serve(d)


@tls_group.command("renew")
@click.option("--if-due", is_flag=True,
              help=f"Only when fewer than {certs.RENEW_DAYS} days are left (for cron).")
@friendly
def tls_renew(if_due):
    """Issue a new server certificate from the fleet's CA for the same names.

    Nodes keep working: they trust the CA, not the server certificate. The running broker
    reloads it at once, without a restart.

    Example: fleet tls renew --if-due
    """
    d = _dir()
    if if_due and "server" not in certs.expiring(d):
        click.echo("the server certificate is not due for renewal")
        return
    _show(certs.renew(d))
    _serve(d)


@tls_group.command("show")
@friendly
def tls_show():
    """List the certificates, their names and when they expire.

    Example: fleet tls show
    """
    _show(_dir())


def _show(d):
    found = certs.certificates(d)
    if not found:
        raise click.ClickException(f"no certificates in {d}: run `fleet tls init --name HOST`")
    for c in found:
        due = "  RENEW NOW" if c["renew"] else ""
        click.echo(f"{c['role']:<6} {c['path']}  {', '.join(c['names'])}  "
                   f"until {c['not_after']:%Y-%m-%d} ({int(c['days_left'])} days){due}")


def register(cli: click.Group) -> None:
    cli.add_command(tls_group)
