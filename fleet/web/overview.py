"""Overview (counts by provider, board and firmware; newest alerts) and the offline map."""

import math

from flask import Blueprint, current_app, render_template

from fleet import upkeep
from fleet.broker import status as broker_status
from fleet.store import alerts as alert_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.web import auth
from fleet.web import db as web_db

bp = Blueprint("overview", __name__)

MAP_W, MAP_H, MAP_PAD = 600, 600, 20
MAP_POINTS = 2000  # above this, nodes are drawn as counts per grid cell to keep the page small
MAP_CELLS = 24


@bp.app_context_processor
def broker_state():
    # Every page says when the broker `fleet run` started is down: no reading arrives meanwhile.
    state = broker_status.read(current_app.config["SETTINGS"].broker_dir)
    return {"broker_down": state if state and state.get("state") == "down" else None}


@bp.route("/")
@auth.require("read")
def index():
    db = web_db.get_db()
    counts = node_store.overview(db)
    evaluated = upkeep.alerts_freshness(db, current_app.config["SETTINGS"])
    return render_template("overview/index.html", counts=counts, evaluated=evaluated,
                           alerts=alert_store.list_alerts(db, limit=10),
                           rollouts=ota_store.rollouts_in_progress(db))


def frame(bounds) -> dict:
    """The map's frame for the bounding box: origin, scale and grid lines at a round step."""
    _n, lat0, lat1, lon0, lon1 = bounds
    # Metres per degree of longitude shrink with latitude; scale so the map is not stretched.
    kx = math.cos(math.radians((lat0 + lat1) / 2))
    span = max((lon1 - lon0) * kx, lat1 - lat0) or 0.001
    inner = MAP_W - 2 * MAP_PAD
    metres = span * 111_000  # about 111 km per degree of latitude
    step_m = 10 ** math.floor(math.log10(metres / 4)) if metres > 4 else 1
    step = step_m / metres * inner
    return {"lat1": lat1, "lon0": lon0, "kx": kx, "span": span, "inner": inner,
            "step_m": step_m, "lines": [MAP_PAD + i * step for i in range(int(inner / step) + 1)]}


def place(points: list[dict], f: dict) -> list[dict]:
    """Each node's x, y on the MAP_W x MAP_H plane (equirectangular, north up)."""
    scale = f["inner"] / f["span"]
    for p in points:
        p["x"] = round(MAP_PAD + (p["lon"] - f["lon0"]) * f["kx"] * scale, 1)
        p["y"] = round(MAP_PAD + (f["lat1"] - p["lat"]) * scale, 1)
    return points


RANKS = ("new", "online", "offline", "alerting")


@bp.route("/map")
@auth.require("read")
def map():
    db = web_db.get_db()
    bounds = node_store.position_bounds(db)
    grid, points, binned = None, [], None
    if bounds[0]:
        grid = frame(bounds)
        if bounds[0] <= MAP_POINTS:
            points = place(node_store.positions(db), grid)
        else:
            size = grid["inner"] / MAP_CELLS
            binned = [{"x": round(MAP_PAD + (i + 0.5) * size, 1),
                       "y": round(MAP_PAD + (j + 0.5) * size, 1),
                       "r": round(min(size / 2, 3 + math.sqrt(n)), 1), "n": n,
                       "status": RANKS[rank]}
                      for i, j, n, rank in node_store.position_cells(
                          db, grid["lat1"], grid["lon0"], grid["kx"], grid["span"], MAP_CELLS)]
    return render_template("overview/map.html", points=points, binned=binned, grid=grid,
                           w=MAP_W, h=MAP_H, pad=MAP_PAD, placed=bounds[0],
                           total=node_store.count_nodes(db))
