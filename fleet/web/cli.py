"""`fleet user` and `fleet token`: the people who log in to the web UI and the API's tokens."""

import sys

import click

from fleet.console import friendly, open_store, when
from fleet.store import users as user_store

# The roles of web/auth.py, repeated so `fleet --help` needs no Flask; a test keeps them equal.
ROLES = ("viewer", "technician", "operator", "admin")


@click.group("user")
def user_group():
    """Manage the people who can log in to the web UI.

    Example: fleet user add alice --role admin
    """


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True,
              help="viewer reads (the least privilege, hence the default); technician also "
                   "works on single nodes; operator also runs bulk actions and rollouts; admin "
                   "also manages users, tokens and providers (docs/fleet.md).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@friendly
def user_add(name, role, password_stdin):
    """Create a user who can log in to the web UI; a viewer unless --role says otherwise.

    Example: echo 's3cret-pass' | fleet user add alice --role admin --password-stdin
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    from fleet.web import auth  # here, not at the top: it loads Flask (start-up time)

    auth.create_user(open_store(), name, password, role, actor="cli")
    click.echo(f"user {name} ({role}) added" + _least(role))


@user_group.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@friendly
def user_set_role(name, role):
    """Change what a user may do.

    Example: fleet user set-role bob technician
    """
    user_store.set_user_role(open_store(), name, role, actor="cli")
    click.echo(f"user {name} is now {role}")


@user_group.command("list")
@friendly
def user_list():
    """List users and their roles.

    Example: fleet user list
    """
    for u in user_store.list_users(open_store()):
        click.echo(f"{u['name']:<32} {u['role']:<10} {when(u['created'])}")


@click.group("token")
def token_group():
    """Manage API bearer tokens.

    Example: fleet token create grafana
    """


@token_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True,
              help="What the token may do, as for users; viewer (read only, the least "
                   "privilege) unless given.")
@friendly
def token_create(name, role):
    """Create an API token (a viewer unless --role says otherwise) and print it once.

    Only its hash is stored. The token alone goes to standard output, for scripts.

    Example: fleet token create deploy-bot --role operator
    """
    from fleet.web import auth  # here, not at the top: it loads Flask (start-up time)

    token = auth.create_token(open_store(), name, role, actor="cli")
    click.echo(f"token {name} ({role}) created" + _least(role), err=True)
    click.echo(token)


def _least(role: str) -> str:
    if role == "viewer":
        return "; viewer is the default: it reads only (--role to give it more)"
    return ""




def register(cli: click.Group) -> None:
    cli.add_command(user_group)
    cli.add_command(token_group)
