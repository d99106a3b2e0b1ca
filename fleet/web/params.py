"""What a request brings that Python would otherwise take without bound: integers and JSON nesting.

An int from a URL or a query string goes to SQLite, which holds 64 bits: a larger one raised
OverflowError (a 500). JSON nested a hundred thousand deep raised RecursionError (a 500). Both are
the client's mistake, so both are a 4xx that says what was wrong, decided here once.
"""

from flask import request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

# SQLite's INTEGER and PostgreSQL's BIGINT.
MAX_INT = 2**63 - 1


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` in a route: an id beyond what the store can hold matches nothing (404)."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_INT, signed=False):  # noqa: A002
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def query_int(name: str, default: int | None = None, lo: int = 0, hi: int = MAX_INT,
              source=None) -> int | None:
    """The integer query (or form) field `name`, lo..hi; absent or empty: default; else a 400."""
    raw = (request.args if source is None else source).get(name)
    if raw is None or raw.strip() == "":
        return default
    raw = raw.strip()
    # Digits only (with a sign): int() also takes "1_000" and 4,300 digits before refusing.
    digits = raw[1:] if raw[:1] in "+-" else raw
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise BadRequest(f"{name}={raw[:40]!r}: expected a whole number {lo}..{hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadRequest(f"{name}={value}: must be within {lo}..{hi}")
    return value


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that nesting too deep for the parser is bad JSON, not a crash."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            # A ValueError is what request.get_json() reports as a body that is not JSON.
            raise ValueError("JSON nested too deeply") from None


def init_app(app) -> None:
    """Before any blueprint: routes bind their converters when they are registered."""
    app.url_map.converters["int"] = BoundedIntConverter
    app.json = BoundedJSONProvider(app)
