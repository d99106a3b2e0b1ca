"""Prometheus `/metrics`: the fleet's figures in the text exposition format, behind a token.

The fleet runs as several processes (web, ingest, provider ingest, upkeep) that share nothing but
the store, so every figure is read from the store when Prometheus scrapes, never kept in this
process's memory: states (nodes online, rollouts, open alerts) are counted by query; rates are
running totals the workers add to in the store (ingest_counters, upkeep's broker figures) that
Prometheus turns into rates with rate(). docs/integrations.md lists each metric and its source.

Other features add figures through register_export_lag(app, fn) (exports, per destination) or
register_source(app, fn) (any other: fn(db) yields prometheus_client metric families).
"""

import time

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from fleet.store import alerts as alert_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store import telemetry as telemetry_store
from fleet.store import upkeep as upkeep_store
from fleet.web import db as web_db
from fleet.web.api import ApiError, require_token
from fleet.web.auth import require

bp = Blueprint("metrics", __name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SOURCES = "polylink_metrics_sources"

# ingest_counters name -> (metric name without _total, help)
_COUNTERS = {
    "frames_stored": ("polylink_frames_stored", "Uplink frames stored (new, not duplicates)."),
    "frames_duplicate": ("polylink_frames_duplicate",
                         "Uplink frames dropped as duplicates of a stored one."),
    "frames_bad": ("polylink_frames_bad", "Frames that could not be decoded or used."),
    "readings_stored": ("polylink_readings_stored", "Readings stored from telemetry frames."),
}


def register_source(app, source) -> None:
    """Add source(db) -> iterable of metric families to every scrape of this app."""
    app.extensions.setdefault(_SOURCES, []).append(source)


def register_export_lag(app, lag) -> None:
    """Add export lag: lag(db) -> {destination: (readings behind, seconds behind or None)}."""

    def source(db):
        behind = GaugeMetricFamily("polylink_export_lag_readings",
                                   "Stored readings not yet delivered to the destination.",
                                   labels=["destination"])
        late = GaugeMetricFamily("polylink_export_lag_seconds",
                                 "Age of the oldest reading not yet delivered.",
                                 labels=["destination"])
        for name, (readings, seconds) in sorted(lag(db).items()):
            behind.add_metric([name], readings)
            if seconds is not None:
                late.add_metric([name], seconds)
        return [behind, late]

    register_source(app, source)


def _store_figures(db, now: float):
    counters = {name: CounterMetricFamily(metric, text, labels=["provider"])
                for name, (metric, text) in _COUNTERS.items()}
    for name, provider, value in telemetry_store.ingest_counters(db):
        if name in counters:
            counters[name].add_metric([provider], value)
    yield from counters.values()

    nodes = GaugeMetricFamily("polylink_nodes", "Nodes by state (online, offline, new) and "
                              "provider.", labels=["state", "provider"])
    for provider, counts in sorted(node_store.overview(db, now)["provider"].items()):
        for state in ("online", "offline", "new"):
            nodes.add_metric([state, provider], counts[state])
    yield nodes

    alerts = GaugeMetricFamily("polylink_alerts_open", "Alerts not resolved, by kind and state.",
                               labels=["kind", "state"])
    for (kind, state), n in sorted(alert_store.open_alert_counts(db).items()):
        alerts.add_metric([kind, state], n)
    yield alerts

    rollouts = GaugeMetricFamily("polylink_rollouts", "Rollouts by state.", labels=["state"])
    for state, n in sorted(ota_store.rollout_state_counts(db).items()):
        rollouts.add_metric([state], n)
    yield rollouts

    upkeep = upkeep_store.upkeep_state(db)
    broker = upkeep.get("broker_sys")
    if broker and broker["detail"]:
        held = GaugeMetricFamily("polylink_broker_messages_stored",
                                 "Messages the broker holds (retained and queued for clients), "
                                 "from $SYS/broker/store/messages/count.")
        held.add_metric([], broker["detail"].get("messages_stored", 0))
        yield held
        clients = GaugeMetricFamily("polylink_broker_clients_connected",
                                    "Clients connected to the broker ($SYS).")
        clients.add_metric([], broker["detail"].get("clients_connected", 0))
        yield clients
    age = GaugeMetricFamily("polylink_upkeep_age_seconds",
                            "Seconds since each periodic task last ran.", labels=["task"])
    for task, state in sorted(upkeep.items()):
        age.add_metric([task], max(0.0, now - state["at"]))
    yield age


class _Scrape:
    """A collector for one scrape: reads the store once, through this request's connection."""

    def __init__(self, db, sources):
        self.db = db
        self.sources = sources

    def collect(self):
        yield from _store_figures(self.db, time.time())
        for source in self.sources:
            yield from source(self.db)


def exposition(db, sources=()) -> bytes:
    """The text exposition of every figure, read from the store now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(db, list(sources)))
    return generate_latest(registry)


@bp.get("/metrics")
@require("read")
def metrics():
    return Response(exposition(web_db.get_db(), current_app.extensions.get(_SOURCES, ())),
                    content_type=CONTENT_TYPE)


@bp.before_request
def token_only():
    # Like /api/v1: a bearer token (Prometheus' `authorization` setting), never a session cookie.
    try:
        require_token()
    except ApiError as e:
        return Response(str(e) + "\n", status=401, content_type="text/plain; charset=utf-8",
                        headers={"WWW-Authenticate": 'Bearer realm="polylink"'})
    return None
