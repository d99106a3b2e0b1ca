"""What the walks of every route share (tests/fleet/web/test_every_route.py, the hostile-input
walk, and tests/fleet/organisations/test_isolation.py, the other-organisation walk): an app whose
requests note which query and form fields each view reads, so a walk can feed exactly those."""

from polylink import proto
from werkzeug.datastructures import ImmutableMultiDict

from fleet import create_app


def frame(mtype, seq, body) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[:proto.encode(buf, mtype, seq, body, None)])


class Recording(ImmutableMultiDict):
    """Request args/form that note which names a view asks for."""

    seen: set

    def _note(self, key):
        self.seen.add(key)

    def get(self, key, default=None, type=None):  # noqa: A002 - werkzeug's signature
        self._note(key)
        return super().get(key, default, type)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def getlist(self, key, type=None):  # noqa: A002
        self._note(key)
        return super().getlist(key, type)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)


def recording_app(settings):
    """(the app, {rule: the args and form names its view read}); filled as requests are made."""
    app = create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "test",
                      "WTF_CSRF_ENABLED": False})
    seen: dict[str, set] = {}

    @app.before_request
    def record():
        from flask import request

        req = request._get_current_object()
        names = seen.setdefault(req.url_rule.rule if req.url_rule else "", set())
        for attr in ("args", "form"):
            wrapped = Recording(getattr(req, attr))
            wrapped.seen = names
            req.__dict__[attr] = wrapped

    return app, seen
