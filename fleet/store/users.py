"""People (users with password hashes and roles) and machines (API tokens, stored hashed)."""

import hashlib
import time

from . import audit
from .base import DuplicateName, IntegrityError, StoreError, first, transaction
from .scope import scope_of


def _members(db, column: str = "id") -> str:
    """The users of the connection's organisation (every user for the platform's)."""
    scope = scope_of(db)
    if scope.platform:
        return "true"
    return f"{column} IN (SELECT user_id FROM memberships WHERE org_id = {int(scope.org_id)})"


def list_users(db) -> list[dict]:
    """Every user (without password hashes), by name."""
    scope = scope_of(db)
    # The role shown is the one in the connection's organisation.
    return list(db.query(
        "SELECT u.id, u.name, coalesce(m.role, u.role) AS role, u.created, u.disabled_at"
        " FROM users u LEFT JOIN memberships m ON m.user_id = u.id AND m.org_id = ?"
        f" WHERE {_members(db, 'u.id')} ORDER BY u.name", [scope.org_id]))


def get_user(db, name) -> dict | None:
    """The user with that name, or None."""
    return first(db, "SELECT * FROM users WHERE name = ?", [name])


def get_member(db, name) -> dict | None:
    """The user with that name if they belong to the connection's organisation, or None."""
    return first(db, f"SELECT * FROM users WHERE name = ? AND {_members(db)}", [name])


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
            # A new user belongs to the organisation that made them, with that role.
            conn.execute("INSERT INTO memberships (user_id, org_id, role)"
                         " SELECT id, ?, ? FROM users WHERE name = ?",
                         (scope_of(db).org_id, role, name))
    except IntegrityError:
        raise DuplicateName(f"user {name!r} already exists") from None
    audit.audit(db, actor, "user.add", name, {"role": role})


def set_user_role(db, name, role, actor=None):
    """Change a user's role in the connection's organisation; raise StoreError if there is no
    such user in it."""
    scope = scope_of(db)
    with transaction(db) as conn:
        if conn.execute("UPDATE memberships SET role = ? WHERE org_id = ? AND user_id ="
                        " (SELECT id FROM users WHERE name = ?)",
                        (role, scope.org_id, name)).rowcount != 1:
            raise StoreError(f"unknown user {name!r}")
        if scope.platform:  # the role a user had before organisations, kept in step
            conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))
        # Any role change ends the user's sessions: a dropped role must not linger in an open
        # browser, and one rule is easier to trust than a ranking kept here.
        _bump_epoch(conn, name)
        audit.insert(conn, time.time(), actor, "user.role", name, {"role": role})


def _bump_epoch(conn, name) -> None:
    """End every session of the user: their cookies carry the old epoch."""
    conn.execute("UPDATE users SET session_epoch = session_epoch + 1 WHERE name = ?", (name,))


def end_sessions(db, name) -> None:
    """End every session of the user (a logout ends them on every device)."""
    with transaction(db) as conn:
        _bump_epoch(conn, name)


def set_disabled(db, name, disabled: bool, actor=None) -> int:
    """Disable a user (sessions end, tokens they made are revoked) or enable them again.

    Returns how many tokens were revoked; raises StoreError if there is no such user.
    Enabling does not bring revoked tokens back: a token, once revoked, stays revoked.
    """
    now = time.time()
    with transaction(db) as conn:
        if conn.execute(f"UPDATE users SET disabled_at = ? WHERE name = ? AND {_members(db)}",
                        (now if disabled else None, name)).rowcount != 1:
            raise StoreError(f"unknown user {name!r}")
        revoked = 0
        if disabled:
            _bump_epoch(conn, name)
            revoked = conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE created_by = ? "
                                   "AND revoked_at IS NULL", (now, name)).rowcount
        audit.insert(conn, now, actor, "user.disable" if disabled else "user.enable", name,
                     {"tokens_revoked": revoked} if disabled else None)
    return revoked


def rename_user(db, name, new_name, actor=None) -> None:
    """Rename a user (their sessions go on; tokens they made follow the new name)."""
    try:
        with transaction(db) as conn:
            if conn.execute(f"UPDATE users SET name = ? WHERE name = ? AND {_members(db)}",
                            (new_name, name)).rowcount != 1:
                raise StoreError(f"unknown user {name!r}")
            conn.execute("UPDATE api_tokens SET created_by = ? WHERE created_by = ?",
                         (new_name, name))
            audit.insert(conn, time.time(), actor, "user.rename", name, {"to": new_name})
    except IntegrityError:
        raise DuplicateName(f"user {new_name!r} already exists") from None


def set_password(db, name, password_hash, actor=None, action="user.password",
                 one_time=False) -> None:
    """Store a new password hash and end the user's sessions; StoreError if no such user.

    one_time: the user must change it at their next login (an admin's reset).
    """
    with transaction(db) as conn:
        if conn.execute("UPDATE users SET password_hash = ?, must_change_password = ? "
                        f"WHERE name = ? AND {_members(db)}",
                        (password_hash, int(one_time), name)).rowcount != 1:
            raise StoreError(f"unknown user {name!r}")
        _bump_epoch(conn, name)
        audit.insert(conn, time.time(), actor, action, name)


def hash_token(token: str) -> str:
    """Tokens are long random strings, so one SHA-256 is enough (no salt or stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


# last_used is written at most this often per token, so a busy script costs no write per call.
TOUCH_EVERY = 60.0


def list_tokens(db) -> list[dict]:
    """Every API token's name, role, maker and times, revoked ones too (never the hash)."""
    return list(db.query("SELECT name, role, created, last_used, revoked_at, created_by "
                         f"FROM api_tokens WHERE {scope_of(db).owns()} ORDER BY name"))


def use_token(db, token: str, now: float | None = None) -> dict | None:
    """{"name", "role", "org_id"} of a live (unrevoked) token, noting its use; None if there is
    none. Any organisation's token is found: the token decides the request's organisation."""
    row = db.conn.execute(
        "SELECT name, role, last_used, org_id FROM api_tokens WHERE token_hash = ?"
        " AND revoked_at IS NULL",
        (hash_token(token),),
    ).fetchone()
    if row is None:
        return None
    now = time.time() if now is None else now
    if row[2] is None or now - row[2] >= TOUCH_EVERY:
        with transaction(db) as conn:
            conn.execute("UPDATE api_tokens SET last_used = ? WHERE name = ?", (now, row[0]))
    return {"name": row[0], "role": row[1], "org_id": row[3]}


def revoke_token(db, name, actor=None) -> None:
    """Revoke a token for good; raise StoreError if there is no such live token."""
    with transaction(db) as conn:
        now = time.time()
        if conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE name = ? "
                        f"AND revoked_at IS NULL AND {scope_of(db).owns()}",
                        (now, name)).rowcount != 1:
            raise StoreError(f"no live token {name!r}")
        audit.insert(conn, now, actor, "token.revoke", name)


def add_token(db, name, token, role="operator", actor=None):
    """Store a token's hash under a name; raise DuplicateName if the name is taken."""
    try:
        with transaction(db) as conn:
            conn.execute(
                "INSERT INTO api_tokens (name, token_hash, created, role, created_by, org_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, hash_token(token), time.time(), role, actor, scope_of(db).org_id),
            )
    except IntegrityError:
        raise DuplicateName(f"token {name!r} already exists") from None
    audit.audit(db, actor, "token.create", name, {"role": role})


def token_name(db, token: str) -> str | None:
    """Name of the token, or None if no such token exists."""
    row = db.conn.execute(
        "SELECT name FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
        (hash_token(token),)
    ).fetchone()
    return row[0] if row else None


def token_info(db, token: str) -> dict | None:
    """{"name", "role"} of the token, or None if no such live (unrevoked) token exists."""
    row = db.conn.execute(
        "SELECT name, role FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
        (hash_token(token),)
    ).fetchone()
    return None if row is None else {"name": row[0], "role": row[1]}


def count_users(db) -> int:
    """How many users the connection's organisation has (all users for the platform's)."""
    return db.conn.execute(f"SELECT count(*) FROM users WHERE {_members(db)}").fetchone()[0]


# --- login attempts, shared by every web process ------------------------------------------------

class _Refused(Exception):
    """Rolls back an attempt that one of its subjects' limits refuses."""


def take_login_attempt(db, limits: dict[str, int], window: float, now: float) -> float | None:
    """Count one login attempt against each subject ({subject: limit}); None if every subject
    is within its limit, else the seconds until the first refusing window ends.

    A subject's window starts with its first attempt and lasts `window` s. The attempt is
    counted before the password is checked, in one transaction: a row lock (PostgreSQL) or the
    write lock (SQLite) orders concurrent attempts, so however many web processes check at once,
    at most `limit` attempts per window get through. A refused attempt is not counted.
    """
    try:
        with transaction(db) as conn:
            wait = None
            for subject, limit in limits.items():
                attempts, until = conn.execute(
                    "INSERT INTO login_attempts (subject, since, until, attempts)"
                    " VALUES (?, ?, ?, 1) ON CONFLICT (subject) DO UPDATE SET"
                    " attempts = CASE WHEN login_attempts.until <= excluded.since THEN 1"
                    " ELSE login_attempts.attempts + 1 END,"
                    " since = CASE WHEN login_attempts.until <= excluded.since"
                    " THEN excluded.since ELSE login_attempts.since END,"
                    " until = CASE WHEN login_attempts.until <= excluded.since"
                    " THEN excluded.until ELSE login_attempts.until END"
                    " RETURNING attempts, until", (subject, now, now + window)).fetchone()
                if attempts > limit:
                    wait = max(wait or 0.0, until - now)
            if wait is not None:
                raise _Refused(wait)
    except _Refused as refused:
        return refused.args[0]
    return None


def login_succeeded(db, forget: list[str], give_back: list[str]) -> None:
    """After a right password: the subjects in `forget` start afresh (the address with the
    name), those in `give_back` no longer count this attempt (the address: it counts failures)."""
    with transaction(db) as conn:
        conn.executemany("DELETE FROM login_attempts WHERE subject = ?", [(s,) for s in forget])
        conn.executemany("UPDATE login_attempts SET attempts = attempts - 1"
                         " WHERE subject = ? AND attempts > 0", [(s,) for s in give_back])


def prune_login_attempts(db, now: float) -> int:
    """Delete the login attempts whose window has ended (upkeep); the count deleted."""
    with transaction(db) as conn:
        return conn.execute("DELETE FROM login_attempts WHERE until <= ?", (now,)).rowcount
