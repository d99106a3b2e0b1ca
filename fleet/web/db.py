"""The fleet's database in Flask: one connection per request, given back at teardown, and the
`db migrate` command; the store itself (fleet/store/) knows nothing of Flask.

On PostgreSQL a request borrows its connection from the process's pool (store.base.PgPool): a
new one cost every page ~10 ms and more for the backend's cold catalog. SQLite opens a file,
which costs next to nothing, so it connects per request.
"""

import click
from flask import abort, current_app, g
from flask.cli import with_appcontext

from fleet.store import migrate
from fleet.store.base import Database, PgPool, SchemaTooNew, close, connect, is_url
from fleet.store.scope import Scope, set_scope

# A request's connection sees nothing until its user, API token or node is known (fail closed):
# no organisation has id 0.
NOBODY = Scope(0)
_POOL = "polylink_pg_pool"


def get_db() -> Database:
    """The request's database connection, opened on first use, with the request's scope."""
    if "db" not in g:
        pool = current_app.extensions.get(_POOL)
        g.db = pool.take() if pool else connect(current_app.config["DATABASE"])
        # remember=True: the connection lives for this request only (scope.set_scope).
        set_scope(g.db, request_scope(), remember=True)
    return g.db


def request_scope() -> Scope:
    """What this request may see: the scope of its own connection (get_db), and of any
    connection that outlives the request (the live stream's, a streamed download's), which
    must be given the same scope (set_scope)."""
    return g.get("scope") or NOBODY


def use_scope(scope: Scope) -> None:
    """From now on this request's store queries see what scope covers (fleet/store/scope.py)."""
    g.scope = scope
    if "db" in g:
        set_scope(g.db, scope, remember=True)


def or_404(missing, get, *args):
    """get(*args), or the 404 page when it raises missing (UnknownNode, UnknownRollout, ...)."""
    try:
        return get(*args)
    except missing:
        abort(404)


def close_db(e=None):
    """Give the request's connection back to the pool (or close it), if one was opened."""
    db = g.pop("db", None)
    if db is None:
        return
    pool = current_app.extensions.get(_POOL)
    if pool:
        pool.give(db)
    else:
        close(db)


@click.command("migrate")
@with_appcontext
def migrate_command():
    """Bring the database schema up to date.

    Example: flask --app fleet db migrate
    """
    db = connect(current_app.config["DATABASE"])
    try:
        before, after = migrate.migrate(db)
    except SchemaTooNew as e:
        raise click.ClickException(str(e)) from None
    finally:
        close(db)
    click.echo(f"schema version {before} -> {after}")


def init_app(app):
    """Register teardown and the `db migrate` command; migrate the database once at start."""
    app.teardown_appcontext(close_db)
    if is_url(app.config["DATABASE"]):
        app.extensions[_POOL] = PgPool(app.config["DATABASE"])
    group = click.Group("db", help="Database commands.")
    group.add_command(migrate_command)
    app.cli.add_command(group)
    close(migrate.open_db(app.config["DATABASE"]))
