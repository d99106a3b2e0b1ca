"""Server-rendered SVG charts: time slices with min-max band and mean line; no JavaScript.

A chart is drawn for a phone: its viewBox is about as wide as a phone's page, so its text is drawn
at close to FONT px there (a 360 px phone shows it 344 px wide). Wider screens put charts side by
side (img.chart in style.css) instead of blowing one up.
"""

import math
import time

from fleet.nodes.display import plain

W, H = 340, 190
FONT = 13  # px at a 340 px wide image; the browser test holds it to >= 12 px on a 360 px phone
PAD_TOP, PAD_BOTTOM, PAD_R = 30, 24, 6
CHAR_W = 0.6 * FONT  # average width of a digit in a sans-serif font, for the left margin
# One slice per 1.25 px of width: finer would not show on a phone, coarser hides spikes.
BUCKETS = 240
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_RANGE = "24h"
TICKS = 4  # about this many labelled values on the y axis: a phone has room for few


def _label_time(t: float, span: float) -> str:
    if span < 86400:
        fmt = "%H:%M"
    elif span == 86400:
        fmt = "%a %H:%M"  # a day back is the same clock time: the weekday tells them apart
    else:
        fmt = "%d %b"
    return time.strftime(fmt, time.gmtime(t))


def ticks(lo: float, hi: float, count: int = TICKS) -> tuple[list[float], int]:
    """Round values spanning [lo, hi] (a step of 1, 2 or 5 times a power of ten) and the number
    of decimals that tells them apart."""
    if hi <= lo:
        pad = max(abs(hi) * 0.02, 0.5)
        lo, hi = lo - pad, hi + pad
    rough = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough * 0.999)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    values = [k * step for k in range(first, last + 1)]
    return values, max(0, -math.floor(math.log10(step) + 1e-9))


def geometry(rows: list[tuple], since: float, until: float, factor: float = 1) -> dict | None:
    """Chart geometry from (t, min, avg, max) rows over [since, until], or None if no data.

    factor converts the stored values to the unit the chart shows (Pa to hPa: 0.01).
    """
    rows = [(t, mn * factor, avg * factor, mx * factor) for t, mn, avg, mx in rows
            if avg is not None]
    if not rows:
        return None
    values, decimals = ticks(min(r[1] for r in rows), max(r[3] for r in rows))
    lo, hi = values[0], values[-1]
    labels = [plain(v, decimals) for v in values]
    pad_l = round(max(len(s) for s in labels) * CHAR_W) + 10
    span = (until - since) or 1.0
    w, h = W - pad_l - PAD_R, H - PAD_TOP - PAD_BOTTOM

    def x(t):
        return pad_l + (t - since) / span * w

    def y(v):
        return PAD_TOP + (hi - v) / (hi - lo) * h

    line = " ".join(f"{x(t):.1f},{y(avg):.1f}" for t, _mn, avg, _mx in rows)
    band = [f"{x(t):.1f},{y(mx):.1f}" for t, _mn, _avg, mx in rows]
    band += [f"{x(t):.1f},{y(mn):.1f}" for t, mn, _avg, _mx in reversed(rows)]
    return {
        "w": W, "h": H, "font": FONT, "pad_l": pad_l, "pad_r": PAD_R, "top": PAD_TOP,
        "bottom": H - PAD_BOTTOM,
        "ticks": [(round(y(v), 1), label) for v, label in zip(values, labels, strict=True)],
        "line": line,
        "band": " ".join(band) if len(rows) > 1 else "",
        "dot": (x(rows[0][0]), y(rows[0][2])) if len(rows) == 1 else None,
        "start": _label_time(since, span), "end": _label_time(until, span),
    }
