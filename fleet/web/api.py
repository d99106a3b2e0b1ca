"""The REST API's shared parts: the /api/v1 parent blueprint, its one bearer-token check, JSON
errors and the query parameters more than one resource reads.

Each feature's API is a blueprint of its own (nodes/api.py, alerts/api.py, identity/api.py,
ota/api.py, providers/views.py); init_app() mounts them all under this one.
"""

from datetime import UTC, datetime

from flask import Blueprint, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from fleet.web import scoping
from fleet.web.auth import bearer_token, csrf
from fleet.web.params import query_int

PREFIX = "/api/v1"
MAX_LIMIT = 10000


class ApiError(Exception):
    """A request the API refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def iso(t) -> str | None:
    """Unix time as ISO 8601 UTC with a Z, or None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def limit_param(default=1000, most=MAX_LIMIT):
    """The `limit` query parameter, 1..most."""
    return query_int("limit", default, lo=1, hi=most)


def or_404(missing, get, *args):
    """get(*args), or 404 with the store's message when it raises missing (UnknownNode, ...)."""
    try:
        return get(*args)
    except missing as e:
        raise ApiError(404, str(e)) from None


def json_body(example: str, fields=None, say_expected: bool = False) -> dict:
    """The request's JSON object, or 400 with an example; with fields, unknown keys are a 400."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object like {example} "
                            "(Content-Type: application/json)")
    if fields is not None:
        known_fields(body, fields, say_expected)
    return body


def known_fields(body: dict, fields, say_expected: bool = False) -> None:
    """400 naming the keys of body that are not in fields (and, if asked, the ones that are)."""
    unknown = set(body) - set(fields)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}"
                       + (f"; expected {', '.join(sorted(fields))}" if say_expected else ""))


def require_token():
    """Every /api/v1 request: a valid bearer token, or 401."""
    token = bearer_token()
    if token is None:
        raise ApiError(401, "missing or invalid bearer token (Authorization: Bearer <token>); "
                            "create one with `fleet token create NAME`")
    # The API authenticates by token only: a browser's session cookie grants nothing here.
    g.user = None
    g.token = token
    g.token_name = token["name"]
    scoping.for_token(token)  # the token's organisation scopes every query of the request


def _error(status: int, message: str):
    response = jsonify({"error": message})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="polylink"'
    return response


def init_app(app, resources):
    """Mount the resources' blueprints under /api/v1, without CSRF (bearer tokens), with JSON
    errors for every /api/ path."""
    # A new parent per app: a blueprint cannot take children once it has been registered.
    bp = Blueprint("api", __name__, url_prefix=PREFIX)
    bp.before_request(require_token)
    for resource in resources:
        bp.register_blueprint(resource)
        csrf.exempt(resource)
    csrf.exempt(bp)
    app.register_blueprint(bp)

    @app.errorhandler(ApiError)
    def api_error(e):
        return _error(e.status, str(e))

    @app.errorhandler(HTTPException)
    def http_error(e):
        if request.path.startswith(PREFIX):
            response = _error(e.code or 500, e.description or e.name)
            # Keep what the exception's own answer says: Allow on a 405 (RFC 9110; found by
            # schemathesis), Retry-After on a 429.
            for name in ("Allow", "Retry-After"):
                if name in e.get_response().headers:
                    response.headers[name] = e.get_response().headers[name]
            return response
        if e.code is None or e.code < 400:
            return e  # a redirect the router asks for
        # The site's own page, not werkzeug's: that one has no viewport and is 980 px on a phone.
        # The exception's response keeps its headers (Allow on a 405, Retry-After on a 429).
        response = e.get_response()
        response.set_data(render_template("error.html", message=e.description or e.name))
        return response

    @app.errorhandler(Exception)
    def unexpected(e):
        # Never a bare 500 page for API clients; the traceback goes to the log.
        current_app.logger.exception("unhandled error")
        if request.path.startswith(PREFIX):
            return _error(500, f"internal error ({type(e).__name__}); see the server log")
        return "internal error; see the server log", 500
