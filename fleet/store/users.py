"""People (users with password hashes and roles) and machines (API tokens, stored hashed)."""

import hashlib
import time

from . import audit
from .base import DuplicateName, IntegrityError, StoreError, first, transaction


def list_users(db) -> list[dict]:
    """Every user (without password hashes), by name."""
    return list(db.query("SELECT id, name, role, created FROM users ORDER BY name"))


def get_user(db, name) -> dict | None:
    """The user with that name, or None."""
    return first(db, "SELECT * FROM users WHERE name = ?", [name])


def get_user_by_id(db, user_id) -> dict | None:
    """The user with that id, or None."""
    return first(db, "SELECT * FROM users WHERE id = ?", [user_id])


def add_user(db, name, password_hash, role, actor=None):
    """Create a user; raise DuplicateName if the name is taken."""
    try:
        with transaction(db) as conn:
            conn.execute(
                "INSERT INTO users (name, password_hash, role, created) VALUES (?, ?, ?, ?)",
                (name, password_hash, role, time.time()),
            )
    except IntegrityError:
        raise DuplicateName(f"user {name!r} already exists") from None
    audit.audit(db, actor, "user.add", name, {"role": role})


def set_user_role(db, name, role, actor=None):
    """Change a user's role; raise StoreError if there is no such user."""
    with transaction(db) as conn:
        if conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name)).rowcount != 1:
            raise StoreError(f"unknown user {name!r}")
        audit.insert(conn, time.time(), actor, "user.role", name, {"role": role})


def hash_token(token: str) -> str:
    """Tokens are long random strings, so one SHA-256 is enough (no salt or stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def list_tokens(db) -> list[dict]:
    """Every API token's name, role and times (never the hash)."""
    return list(db.query("SELECT name, role, created, last_used FROM api_tokens ORDER BY name"))


def add_token(db, name, token, role="operator", actor=None):
    """Store a token's hash under a name; raise DuplicateName if the name is taken."""
    try:
        with transaction(db) as conn:
            conn.execute(
                "INSERT INTO api_tokens (name, token_hash, created, role) VALUES (?, ?, ?, ?)",
                (name, hash_token(token), time.time(), role),
            )
    except IntegrityError:
        raise DuplicateName(f"token {name!r} already exists") from None
    audit.audit(db, actor, "token.create", name, {"role": role})


def token_name(db, token: str) -> str | None:
    """Name of the token, or None if no such token exists."""
    row = db.conn.execute(
        "SELECT name FROM api_tokens WHERE token_hash = ?", (hash_token(token),)
    ).fetchone()
    return row[0] if row else None


def token_info(db, token: str) -> dict | None:
    """{"name", "role"} of the token, or None if no such token exists."""
    row = db.conn.execute(
        "SELECT name, role FROM api_tokens WHERE token_hash = ?", (hash_token(token),)
    ).fetchone()
    return None if row is None else {"name": row[0], "role": row[1]}


def count_users(db) -> int:
    """How many users exist."""
    return db.conn.execute("SELECT count(*) FROM users").fetchone()[0]
