"""fleet/web/db.py: the migrate command and the per-request connection."""

import sqlite3

import psycopg
import pytest

from fleet.store import migrate
from fleet.web import db as web_db


def test_flask_db_migrate_hook(app):
    result = app.test_cli_runner().invoke(args=["db", "migrate"])
    assert result.exit_code == 0
    assert f"{migrate.SCHEMA_VERSION} -> {migrate.SCHEMA_VERSION}" in result.output


def test_connection_closes_at_teardown(app):
    with app.app_context():
        db = web_db.get_db()
        assert web_db.get_db() is db
    with pytest.raises((sqlite3.ProgrammingError, psycopg.OperationalError)):
        db.conn.execute("SELECT 1")
