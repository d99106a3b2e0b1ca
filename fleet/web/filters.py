"""Template filters every page uses: a time as ISO 8601 (`iso`) and as time since (`ago`)."""

import time

from fleet.web.api import iso


def ago(t) -> str:
    """A short human 'time since'."""
    if t is None:
        return "never"
    s = max(0, int(time.time() - t))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def iso_or_dash(t) -> str:
    return iso(t) or "-"


def init_app(app):
    app.add_template_filter(iso_or_dash, "iso")
    app.add_template_filter(ago, "ago")
