"""What every `fleet` command module builds on: library errors as one-line messages, the store
named by DATA_DIR, and times as people read them."""

import functools
import time

import click

from fleet.broker.auth import BrokerAuthError
from fleet.ingest import IngestError
from fleet.settings import SettingsError, from_env
from fleet.store.base import StoreError
from fleet.store.migrate import open_db


def one_line(*errors):
    """A decorator: these exceptions become one-line click errors, never a traceback."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except errors as e:
                raise click.ClickException(str(e)) from None

        return wrapper

    return decorate


# The library's named exceptions, for most commands (nodes/cli.py adds the downlink errors).
FRIENDLY = (SettingsError, StoreError, IngestError, BrokerAuthError, ValueError)
friendly = one_line(*FRIENDLY)


# The organisation `fleet --org NAME` (or FLEET_ORG) acts for; None: the whole fleet, as the
# platform operator (whoever runs the CLI holds DATA_DIR, and with it every organisation's data).
ORG: str | None = None


def open_store():
    """The fleet database named by DATA_DIR, migrated to the current schema, scoped to --org."""
    db = open_db(from_env().db_path)
    if ORG is not None:
        from fleet.store import orgs
        from fleet.store.scope import set_scope

        set_scope(db, orgs.scope_for(db, orgs.get_organisation(db, ORG)["id"]))
    return db


def platform_command() -> None:
    """Refuse, as a one-line error, a command that acts for the whole platform (its database,
    certificates, backups) under --org of an organisation that is not the platform operator's.
    Called first thing in such a command (or its group, before the subcommand's options)."""
    if ORG is None:
        return
    from fleet.store import orgs

    db = open_db(from_env().db_path)
    try:
        platform = orgs.get_organisation(db, ORG)["platform"]
    except orgs.UnknownOrganisation as e:
        raise click.ClickException(str(e)) from None
    finally:
        db.conn.close()
    if not platform:
        path = click.get_current_context().command_path.split(" ", 1)[-1]
        raise click.ClickException(
            f"`fleet {path}` acts for the whole platform: the platform operator's to run"
            f" (without --org); {ORG!r} may not")


def when(t) -> str:
    """Unix time as UTC ISO 8601, or '-' if never."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
