"""Server-rendered SVG charts: time slices with min-max band and mean line; no JavaScript."""

import time

W, H, PAD_L, PAD_R, PAD_Y = 600, 170, 44, 8, 18
# One slice per 2.5 px of width: finer would not show on a phone, coarser hides spikes.
BUCKETS = 240
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_RANGE = "24h"


def _label_time(t: float, span: float) -> str:
    fmt = "%H:%M" if span <= 86400 else "%d %b"
    return time.strftime(fmt, time.gmtime(t))


def geometry(rows: list[tuple], since: float, until: float) -> dict | None:
    """Chart geometry from (t, min, avg, max) rows over [since, until], or None if no data."""
    rows = [r for r in rows if r[2] is not None]
    if not rows:
        return None
    lo = min(r[1] for r in rows)
    hi = max(r[3] for r in rows)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    span = (until - since) or 1.0
    w, h = W - PAD_L - PAD_R, H - 2 * PAD_Y

    def x(t):
        return PAD_L + (t - since) / span * w

    def y(v):
        return PAD_Y + (hi - v) / (hi - lo) * h

    line = " ".join(f"{x(t):.1f},{y(avg):.1f}" for t, _mn, avg, _mx in rows)
    band = [f"{x(t):.1f},{y(mx):.1f}" for t, _mn, _avg, mx in rows]
    band += [f"{x(t):.1f},{y(mn):.1f}" for t, mn, _avg, _mx in reversed(rows)]
    return {
        "w": W, "h": H, "pad_l": PAD_L, "pad_r": PAD_R, "pad_y": PAD_Y,
        "line": line,
        "band": " ".join(band) if len(rows) > 1 else "",
        "dot": (x(rows[0][0]), y(rows[0][2])) if len(rows) == 1 else None,
        "lo": f"{lo:.4g}", "hi": f"{hi:.4g}",
        "start": _label_time(since, span), "end": _label_time(until, span),
        "last": rows[-1][2],
    }
