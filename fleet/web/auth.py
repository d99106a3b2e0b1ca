"""Users, login sessions with CSRF protection and a login rate limit, and API bearer tokens."""

import functools
import hashlib
import hmac
import math
import re
import secrets
import time
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from pwdlib import PasswordHash

from fleet.store import audit as audit_store
from fleet.store import users as user_store
from fleet.web import db as web_db
from fleet.web import scoping

bp = Blueprint("auth", __name__, url_prefix="/auth")
csrf = CSRFProtect()
# argon2id with pwdlib's recommended parameters.
hasher = PasswordHash.recommended()

USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
TOKEN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
MIN_PASSWORD = 8
TOKEN_PREFIX = "plt_"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

# Roles, least to most powerful. Each area of the fleet names the roles that may change things
# in it; everybody logged in may read everything except the admin area. Admin may do everything.
ROLES = ("viewer", "technician", "operator", "admin")
AREAS = {
    # Read pages and the API's GET endpoints (not the provisioning page: it mints and shows
    # node credentials and claim tokens, so it needs "provisioning").
    "read": ("viewer", "technician", "operator", "admin"),
    # One node at a time: commands, config, location, tags, name; acknowledge its alerts.
    "nodes": ("technician", "operator", "admin"),
    # Register nodes, build their images, approve claims (issue 5 adds the pages).
    "provisioning": ("technician", "operator", "admin"),
    # Many nodes at once, releases and rollouts (issue 3 adds the latter).
    "bulk": ("operator", "admin"),
    "releases": ("operator", "admin"),
    # People, API tokens, providers, signing keys and the audit log.
    "admin": ("admin",),
    # Nodes fetching update files (fleet/ota/api.py): no user role; a node logs in with its own
    # MQTT credentials (HTTP Basic), checked by the view itself.
    "device": (),
}


class AuthError(ValueError):
    """A user or token cannot be created as asked."""


def check_role(role: str) -> str:
    """Return role if it is one of ROLES, else raise AuthError."""
    if role not in ROLES:
        raise AuthError(f"role {role!r} must be one of {', '.join(ROLES)}")
    return role


def allowed(role: str | None, area: str) -> bool:
    """True if a user or token with this role may change things in the area."""
    return role in AREAS[area]


def create_user(db, name: str, password: str, role: str = "viewer", actor=None):
    """Create a user with an argon2 password hash; raise AuthError on a bad name or password."""
    if not USER_NAME.match(name or ""):
        raise AuthError(f"user name {name!r} must be 1-64 of A-Z a-z 0-9 _ . @ -")
    check_role(role)
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password must be at least {MIN_PASSWORD} characters")
    user_store.add_user(db, name, hasher.hash(password), role, actor=actor)


def create_token(db, name: str, role: str = "viewer", actor=None) -> str:
    """Create an API token and return it; only its hash is stored, so it is shown once."""
    if not TOKEN_NAME.match(name or ""):
        raise AuthError(f"token name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    user_store.add_token(db, name, token, role, actor=actor)
    return token


def check_password(db, name: str, password: str) -> dict | None:
    """The user if name and password match, else None (same work either way)."""
    user = user_store.get_user(db, name)
    if user is None:
        # Hash anyway so a wrong name takes as long as a wrong password.
        hasher.hash(password)
        return None
    ok = hasher.verify(password, user["password_hash"])
    return user if ok and user["disabled_at"] is None else None


def bearer_token() -> dict | None:
    """The valid bearer token of this request as {"name", "role"}, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return user_store.use_token(web_db.get_db(), token.strip())


def bearer_token_name() -> str | None:
    """Name of the valid bearer token in this request, or None."""
    info = bearer_token()
    return None if info is None else info["name"]


def actor() -> str | None:
    """Who is making this request, as the audit log names them: the user, or token:NAME."""
    if g.get("user") is not None:
        return g.user["name"]
    if g.get("token") is not None:
        return "token:" + g.token["name"]
    return None


def current_role() -> str | None:
    """Role of the logged-in user, or of the API token of this request."""
    if g.get("user") is not None:
        return g.user["role"]
    if g.get("token") is not None:
        return g.token["role"]
    return None


def local_target(raw: str | None, fallback: str) -> str:
    """raw if it is a path on this site, else fallback: a redirect never leaves the site.

    Browsers drop tabs and newlines from a URL and read a backslash as a slash (`/<TAB>/evil`
    is `//evil`, another host), so any control character or backslash is refused.
    """
    if not raw or any(ord(c) < 0x20 or c in "\x7f\\" for c in raw):
        return fallback
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or raw.startswith("//"):
        return fallback
    return raw


def client_address() -> str:
    """The address this request comes from: the TCP peer, or the address a trusted proxy forwards.

    fleet/web/https.py rewrites remote_addr from X-Forwarded-For only when the peer is one of
    TRUSTED_PROXIES, so a client elsewhere cannot choose the address its failures count against.
    """
    return request.remote_addr or "?"


class Forbidden(Exception):
    """The user or token is authenticated but its role may not do this."""


def _subject(kind: str, value: str) -> str:
    """A login limit's subject as stored: an HMAC under the fleet's secret key, so what was typed
    as a user name (sometimes a password in the wrong field) is never kept in clear, and the
    same for every web process (they share the key, as they share session cookies)."""
    key = current_app.config["SECRET_KEY"]
    key = key.encode() if isinstance(key, str) else key
    return kind + ":" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def login_required(view):
    """Redirect to the login page unless someone is logged in."""

    @functools.wraps(view)
    def wrapped(**kwargs):
        if g.user is None:
            return redirect(url_for("auth.login", next=request.path))
        return view(**kwargs)

    return wrapped


def _guard(permitted, needs: str):
    """A decorator: the view runs for a role that permitted(role) lets in.

    Not logged in: the UI redirects to the login page (the API already answered 401).
    Logged in with another role: 403 (JSON for the API, a page for the UI).
    """

    def decorate(view):
        @functools.wraps(view)
        def wrapped(**kwargs):
            role = current_role()
            if role is None:
                return redirect(url_for("auth.login", next=request.path))
            if not permitted(role):
                raise Forbidden(f"role {role} may not do this (needs one of: {needs})")
            return view(**kwargs)

        return wrapped

    return decorate


def require(area: str):
    """Let a view run only for a user (session) or API token whose role may act in area."""
    if area not in AREAS:
        raise ValueError(f"unknown area {area!r}; known: {', '.join(AREAS)}")
    guard = _guard(lambda role: allowed(role, area), ", ".join(AREAS[area]))

    def decorate(view):
        wrapped = guard(view)
        wrapped.polylink_area = area  # type: ignore[attr-defined]  (read by the permission test)
        return wrapped

    return decorate


def require_role(*roles: str):
    """Let a view run only for these roles (exactly; admin is not implied)."""
    for role in roles:
        check_role(role)
    return _guard(lambda role: role in roles, ", ".join(roles))


def start_session(user: dict) -> None:
    """Log the user in: the cookie names them and carries their current session epoch."""
    session["user_id"] = user["id"]
    session["epoch"] = user["session_epoch"]


def session_user() -> dict | None:
    """The user this request's cookie names, if the cookie is still valid on the server.

    A signed cookie alone cannot be taken back, so it must carry the user's current epoch:
    logout, a password or role change and disabling bump it, and an older cookie is refused.
    """
    user_id = session.get("user_id")
    if user_id is None:
        return None
    user = _valid_user(web_db.get_db(), user_id, session.get("epoch"))
    if user is None:
        session.clear()
    return user


def _valid_user(db, user_id, epoch) -> dict | None:
    """The user, if a session of theirs at this epoch still holds: not disabled, not ended."""
    user = user_store.get_user_by_id(db, user_id)
    if user is None or user["disabled_at"] is not None or user["session_epoch"] != epoch:
        return None
    return user


def session_check():
    """For work that outlives this request (a live stream): check(conn) tells, on a store
    connection of its own, whether the session that asked for it still holds. Logout, a
    password or role change and disabling end it at the stream's next read, not when the
    stream runs out."""
    user_id, epoch = g.user["id"], session.get("epoch")
    return lambda conn: _valid_user(conn, user_id, epoch) is not None


@bp.before_app_request
def load_logged_in_user():
    g.user = session_user()
    # The organisation chosen and the role in it (fleet/web/scoping.py).
    scoping.for_user()


@bp.route("/login", methods=("GET", "POST"))
def login():
    status, headers = 200, {}
    if request.method == "POST":
        name = request.form.get("username", "")
        password = request.form.get("password", "")
        # Keyed on the address with the name, never the name alone: guesses from one address
        # must not lock the real user out from another. The address alone has a higher limit,
        # so trying many names from one place is slowed down too. The counts live in the store
        # (store/users.py), shared by every web process.
        addr = client_address()
        by_addr, by_name = _subject("addr", addr), _subject("addr-user", addr + "\0" + name)
        limits = {by_addr: current_app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"],
                  by_name: current_app.config["LOGIN_MAX_FAILURES"]}
        db = web_db.get_db()
        wait = user_store.take_login_attempt(db, limits, current_app.config["LOGIN_WINDOW"],
                                             time.time())
        if wait is not None:
            minutes = max(1, math.ceil(wait / 60))
            flash(f"Too many failed logins from this address; try again in {minutes} minute"
                  f"{'s' if minutes != 1 else ''}.")
            status, headers = 429, {"Retry-After": str(math.ceil(wait))}
        else:
            user = check_password(db, name, password)
            if user is None:
                flash("Wrong user name or password.")
                status = 401
            else:
                # The address's count across names keeps its failures, not this success.
                user_store.login_succeeded(db, forget=[by_name], give_back=[by_addr])
                session.clear()
                start_session(user)
                g.user = user
                scoping.for_user()  # the login is recorded in the user's organisation
                audit_store.audit(db, name, "login")
                # Only local paths: never bounce a fresh session to another site.
                return redirect(local_target(request.args.get("next"), url_for("nodes.index")))
    return render_template("auth/login.html"), status, headers


@bp.route("/logout", methods=("POST",))
def logout():
    if g.user is not None:
        user_store.end_sessions(web_db.get_db(), g.user["name"])
        audit_store.audit(web_db.get_db(), g.user["name"], "logout")
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app):
    """CSRF on every form (the API blueprint is exempted where it is registered)."""
    csrf.init_app(app)

    @app.errorhandler(CSRFError)
    def csrf_error(e):
        return render_template("error.html", message=f"Form refused: {e.description}"), 400

    @app.errorhandler(Forbidden)
    def forbidden(e):
        if request.path.startswith("/api/"):
            return {"error": str(e)}, 403
        return render_template("error.html", message=f"Not allowed: {e}"), 403

    @app.after_request
    def security_headers(response):
        # Pages carry no inline script or style: the browser may run only our own files, so an
        # injected <script> would not run even if escaping ever failed.
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.context_processor
    def roles_in_templates():
        # `can('bulk')` in a template hides what the user may not do (the view checks anyway).
        return {"can": lambda area: allowed(current_role(), area)}
