"""Template filters every page uses: a time as ISO 8601 (`iso`), as time since (`ago`) and as
people read a date and a clock (`when`)."""

import time

from markupsafe import Markup

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


def when(t):
    """'2026-12-04 08:39:15' (UTC) in a <time> whose date and clock each stay on one line
    (style.css): a phone's narrow column wraps it between the two, never inside the date."""
    if t is None:
        return "-"
    day, clock = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)).split(" ")
    return Markup(f'<time datetime="{iso(t)}"><span>{day}</span> <span>{clock}</span></time>')


def init_app(app):
    app.add_template_filter(iso_or_dash, "iso")
    app.add_template_filter(ago, "ago")
    app.add_template_filter(when, "when")
