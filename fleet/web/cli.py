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


@user_group.command("disable")
@click.argument("name")
@friendly
def user_disable(name):
    """Disable a user: no login, their sessions end, the tokens they made are revoked.

    Example: fleet user disable bob
    """
    revoked = user_store.set_disabled(open_store(), name, True, actor="cli")
    click.echo(f"user {name} disabled; {revoked} token(s) revoked")


@user_group.command("enable")
@click.argument("name")
@friendly
def user_enable(name):
    """Let a disabled user log in again (revoked tokens stay revoked).

    Example: fleet user enable bob
    """
    user_store.set_disabled(open_store(), name, False, actor="cli")
    click.echo(f"user {name} enabled")


@user_group.command("rename")
@click.argument("name")
@click.argument("new_name")
@friendly
def user_rename(name, new_name):
    """Rename a user; the audit log keeps the old name in old entries.

    Example: fleet user rename bob robert
    """
    from fleet.web import accounts  # here, not at the top: it loads Flask (start-up time)

    accounts.rename(open_store(), name, new_name, actor="cli")
    click.echo(f"user {name} is now {new_name}")


@user_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True,
              help="Read the old password, then the new one, one a line from standard input.")
@friendly
def user_passwd(name, password_stdin):
    """Change a user's password, which needs the old one; their sessions end.

    Example: fleet user passwd alice
    """
    if password_stdin:
        old = sys.stdin.readline().rstrip("\n")
        new = sys.stdin.readline().rstrip("\n")
    else:
        old = click.prompt("Old password", hide_input=True)
        new = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    from fleet.web import accounts  # here, not at the top: it loads Flask (start-up time)

    accounts.change_password(open_store(), name, old, new, actor="cli")
    click.echo(f"password of {name} changed; their sessions have ended")


@user_group.command("reset")
@click.argument("name")
@friendly
def user_reset(name):
    """Give a user a new random password, printed once; their sessions end.

    Example: fleet user reset bob
    """
    from fleet.web import accounts  # here, not at the top: it loads Flask (start-up time)

    click.echo(accounts.reset_password(open_store(), name, actor="cli"))


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


@token_group.command("list")
@friendly
def token_list():
    """List API tokens: role, who made them, when created and last used, and if revoked.

    Example: fleet token list
    """
    for t in user_store.list_tokens(open_store()):
        state = f"revoked {when(t['revoked_at'])}" if t["revoked_at"] else "live"
        click.echo(f"{t['name']:<24} {t['role']:<10} {t['created_by'] or '-':<16} "
                   f"created {when(t['created'])}  last used {when(t['last_used'])}  {state}")


@token_group.command("revoke")
@click.argument("name")
@friendly
def token_revoke(name):
    """Revoke an API token for good: it answers 401 from now on.

    Example: fleet token revoke grafana
    """
    user_store.revoke_token(open_store(), name, actor="cli")
    click.echo(f"token {name} revoked")




def register(cli: click.Group) -> None:
    cli.add_command(user_group)
    cli.add_command(token_group)
