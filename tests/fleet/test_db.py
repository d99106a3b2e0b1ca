"""The Flask side of fleet/db.py: the migrate command and the per-request connection."""

import sqlite3

import pytest

from fleet import db as store


def test_flask_db_migrate_hook(app):
    result = app.test_cli_runner().invoke(args=["db", "migrate"])
    assert result.exit_code == 0
    assert f"{store.SCHEMA_VERSION} -> {store.SCHEMA_VERSION}" in result.output


def test_connection_closes_at_teardown(app):
    with app.app_context():
        db = store.get_db()
        assert store.get_db() is db
    with pytest.raises(sqlite3.ProgrammingError):
        db.conn.execute("SELECT 1")
