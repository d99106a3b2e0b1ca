"""fleet/web/db.py: the migrate command and the per-request connection."""

import sqlite3

import pytest

from fleet.store import migrate
from fleet.store.base import PgPool
from fleet.store.scope import Scope, scope_of
from fleet.web import db as web_db


def test_flask_db_migrate_hook(app):
    result = app.test_cli_runner().invoke(args=["db", "migrate"])
    assert result.exit_code == 0
    assert f"{migrate.SCHEMA_VERSION} -> {migrate.SCHEMA_VERSION}" in result.output


def test_connection_closes_at_teardown_or_goes_back_to_the_pool(app):
    with app.app_context():
        db = web_db.get_db()
        assert web_db.get_db() is db
        raw = db.conn.raw if db.dialect == "postgresql" else None
    if raw is None:  # SQLite: a file is cheap to open, so each request closes its own
        with pytest.raises(sqlite3.ProgrammingError):
            db.conn.execute("SELECT 1")
        return
    # PostgreSQL: the next request borrows the same server connection, without the last scope.
    web_db.set_scope(db, Scope(42))
    with app.app_context():
        again = web_db.get_db()
        assert again.conn.raw is raw
        assert scope_of(again) == web_db.NOBODY
        assert again.conn.execute("SELECT 1").fetchone() == (1,)


@pytest.fixture
def pool(pg_cluster):
    """A pool on a fresh database of the run's PostgreSQL (whatever --backend is: only
    PostgreSQL pools its connections)."""
    name = pg_cluster.fresh()
    pool = PgPool(pg_cluster.url(name))
    yield pool
    pool.close()
    pg_cluster.drop(name)


def backend_pid(db) -> int:
    return db.conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_the_pool_lends_a_connection_again_only_when_it_is_idle_and_open(pool):
    db = pool.take()
    pid = backend_pid(db)
    pool.give(db)
    db = pool.take()
    assert backend_pid(db) == pid  # the same server backend, lent again
    db.conn.execute("BEGIN")  # a request that died inside a transaction
    pool.give(db)
    assert db.conn.raw.closed
    db = pool.take()
    assert backend_pid(db) != pid
    db.conn.raw.close()
    pool.give(db)  # a closed one is dropped
    assert pool.take().conn.execute("SELECT 1").fetchone() == (1,)


def test_a_connection_idle_for_long_is_checked_before_it_is_lent(pool):
    import psycopg

    pool.check_after = 0.0
    db = pool.take()
    pid = backend_pid(db)
    pool.give(db)
    # Its backend ends (as in a server restart) while it waits in the pool.
    with psycopg.connect(pool.url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits for its end
    db = pool.take()
    assert backend_pid(db) != pid


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_alone(pool):
    import os

    db = pool.take()
    pid = backend_pid(db)
    pool.give(db)
    child = os.fork()
    if child == 0:  # the child: a connection of its own; the parent's is neither used nor closed
        try:
            mine = pool.take()
            os._exit(0 if backend_pid(mine) != pid else 1)
        except BaseException:
            os._exit(2)
    _pid, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    again = pool.take()
    assert backend_pid(again) == pid  # the parent's connection still works
