"""Overview (counts by provider, board and firmware; newest alerts) and the offline map."""

import math

from flask import Blueprint, render_template

from . import alerts, auth
from . import db as store

bp = Blueprint("overview", __name__)

MAP_W, MAP_H, MAP_PAD = 600, 600, 20
MAP_POINTS = 2000  # above this, nodes are drawn as counts per grid cell to keep the page small
MAP_CELLS = 30
STATUS_RANK = {"new": 0, "online": 1, "offline": 2, "alerting": 3}


@bp.route("/")
@auth.require("read")
def index():
    db = store.get_db()
    alerts.refresh(db)
    counts = store.overview(db)
    return render_template("overview/index.html", counts=counts,
                           alerts=store.list_alerts(db, limit=10))


def project(points: list[dict]) -> tuple[list[dict], dict]:
    """Place nodes on a MAP_W x MAP_H plane (equirectangular, north up); return them and a grid."""
    lats = [p["lat"] for p in points]
    lons = [p["lon"] for p in points]
    lat0, lat1, lon0, lon1 = min(lats), max(lats), min(lons), max(lons)
    # Metres per degree of longitude shrink with latitude; scale so the map is not stretched.
    kx = math.cos(math.radians((lat0 + lat1) / 2))
    span = max((lon1 - lon0) * kx, lat1 - lat0) or 0.001
    inner = MAP_W - 2 * MAP_PAD
    out = []
    for p in points:
        x = MAP_PAD + (p["lon"] - lon0) * kx / span * inner
        y = MAP_H - MAP_PAD - (p["lat"] - lat0) / span * inner
        out.append(dict(p, x=round(x, 1), y=round(y, 1)))
    # Grid lines at a round step in metres (about 111 km per degree of latitude).
    metres = span * 111_000
    step_m = 10 ** math.floor(math.log10(metres / 4)) if metres > 4 else 1
    step = step_m / metres * inner
    grid = {"step": step, "step_m": step_m, "lines": [MAP_PAD + i * step for i in
                                                      range(int(inner / step) + 1)]}
    return out, grid


def cells(points: list[dict]) -> list[dict]:
    """Projected points binned into MAP_CELLS x MAP_CELLS cells: count and worst status."""
    size = (MAP_W - 2 * MAP_PAD) / MAP_CELLS
    bins: dict = {}
    for p in points:
        key = (int((p["x"] - MAP_PAD) // size), int((p["y"] - MAP_PAD) // size))
        b = bins.setdefault(key, {"n": 0, "status": "new"})
        b["n"] += 1
        if STATUS_RANK[p["status"]] > STATUS_RANK[b["status"]]:
            b["status"] = p["status"]
    return [{"x": round(MAP_PAD + (i + 0.5) * size, 1), "y": round(MAP_PAD + (j + 0.5) * size, 1),
             "r": round(min(size / 2, 3 + math.sqrt(b["n"])), 1), **b}
            for (i, j), b in bins.items()]


@bp.route("/map")
@auth.require("read")
def map():
    db = store.get_db()
    points = store.positions(db)
    for p in points:
        if p["alerting"]:
            p["status"] = "alerting"
    grid, binned = None, None
    if points:
        points, grid = project(points)
        if len(points) > MAP_POINTS:
            binned, points = cells(points), []
    total = store.overview(db)["all"]["total"]
    return render_template("overview/map.html", points=points, binned=binned, grid=grid,
                           w=MAP_W, h=MAP_H, pad=MAP_PAD, placed=len(points or binned or []),
                           total=total)
