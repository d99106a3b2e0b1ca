"""Prometheus /metrics: a real scrape parsed by prometheus_client's own parser; token only."""

import time

from polylink import proto
from prometheus_client.parser import text_string_to_metric_families

from fleet.ingest import Ingest
from fleet.ota import rollouts
from fleet.store import alerts as alert_store
from fleet.store import upkeep as upkeep_store
from fleet.web import auth, metrics


def frame(mtype, seq, body) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[:proto.encode(buf, mtype, seq, body, None)])


def scrape(client, token) -> dict:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.data
    assert r.content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_a_scrape_counts_what_the_store_holds(client, db):
    token = auth.create_token(db, "prometheus", "viewer")
    now = time.time()
    ing = Ingest(db)
    for seq in range(3):
        ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, seq, [(0, 0, 21.5), (1, 0, 40)]), now)
    ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, 1, [(0, 0, 21.5)]), now)  # duplicate
    ing.add("pl/v1/n02/up", b"\xff\xff", now)
    ing.flush()
    ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, 2, [(0, 0, 21.5)]), now)  # duplicate, later
    ing.add("pl/v1/n01/conn", b"1", now)
    ing.flush()
    alert_store.open_alert(db, "n01", "battery_low", "3.2 V", now)
    upkeep_store.mark_upkeep(db, "broker_sys", now - 5,
                             {"messages_stored": 7, "clients_connected": 3})

    m = scrape(client, token)
    wifi = (("provider", "mqtt"),)
    assert m[("polylink_frames_stored_total", wifi)] == 3
    assert m[("polylink_frames_duplicate_total", wifi)] == 2
    assert m[("polylink_readings_stored_total", wifi)] == 6
    assert sum(v for (name, _), v in m.items() if name == "polylink_frames_bad_total") == 1
    assert m[("polylink_nodes", (("provider", "mqtt"), ("state", "online")))] == 1
    assert m[("polylink_alerts_open", (("kind", "battery_low"), ("state", "open")))] == 1
    assert m[("polylink_broker_messages_stored", ())] == 7
    assert m[("polylink_upkeep_age_seconds", (("task", "broker_sys"),))] >= 5

    # Counters only grow, and the next scrape sees a new batch from any worker process.
    ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, 9, [(0, 0, 22.0)]), now)
    ing.flush()
    assert scrape(client, token)[("polylink_frames_stored_total", wifi)] == 4


def test_rollout_states_and_the_export_lag_hook(app, db):
    from rollout_nodes import Nodes, _release  # tests/fleet/ is on sys.path

    _release(db, "0.2.0")
    Nodes(db, ["n-000", "n-001"])
    rid = rollouts.create(db, "0.2.0", {"nodes": ["n-000"]}, [{"percent": 100, "soak": 60}])
    rollouts.act(db, rid, "pause")
    metrics.register_export_lag(app, lambda db: {"city-ngsi": (120, 4.5), "hook": (0, None)})
    token = auth.create_token(db, "prometheus", "viewer")
    m = scrape(app.test_client(), token)
    assert m[("polylink_rollouts", (("state", "paused"),))] == 1
    assert m[("polylink_export_lag_readings", (("destination", "city-ngsi"),))] == 120
    assert m[("polylink_export_lag_seconds", (("destination", "city-ngsi"),))] == 4.5
    assert m[("polylink_export_lag_readings", (("destination", "hook"),))] == 0
    assert ("polylink_export_lag_seconds", (("destination", "hook"),)) not in m


def test_metrics_need_a_token_not_a_session(client, db, user, form_token):
    r = client.get("/metrics")
    assert r.status_code == 401 and "bearer token" in r.get_data(as_text=True)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = client.get("/metrics", headers={"Authorization": "Bearer plt_wrong"})
    assert r.status_code == 401
    r = client.post("/auth/login", data={"username": user[0], "password": user[1],
                                         "csrf_token": form_token(client, "/auth/login")})
    assert r.status_code == 302 and client.get("/nodes/").status_code == 200  # logged in
    assert client.get("/metrics").status_code == 401


def test_a_destination_behind_shows_its_lag(app, db, settings):
    """The exports feature's own figures (registry.lag through register_export_lag)."""
    from fleet.exports import registry
    from fleet.store import exports as export_store

    now = time.time()
    ing = Ingest(db)
    ing.add("pl/v1/n01/up", frame(proto.TELEMETRY, 0, [(0, 0, 21.5), (1, 0, 40)]), now - 90)
    ing.flush()
    hook = {"kind": "webhook", "url": "https://city.example/hook"}
    registry.add(db, settings.data_dir, dict(hook, name="late"), "k", from_start=True)
    registry.add(db, settings.data_dir, dict(hook, name="fresh"), "k")  # from now on
    token = auth.create_token(db, "prometheus", "viewer")

    m = scrape(app.test_client(), token)
    late, fresh = (("destination", "late"),), (("destination", "fresh"),)
    assert m[("polylink_export_lag_readings", late)] == 2
    assert m[("polylink_export_lag_seconds", late)] >= 90  # since the oldest was measured
    assert m[("polylink_export_lag_readings", fresh)] == 0
    assert m[("polylink_export_lag_seconds", fresh)] == 0

    # Once the worker has delivered the batch (it moves the cursor), the lag is gone.
    _readings, _events, r_at, e_at = export_store.fetch_after(
        db, export_store.START, export_store.START, [], [], 100)
    export_store.advance(db, "late", r_at, e_at, 2, [], time.time())
    m = scrape(app.test_client(), token)
    assert m[("polylink_export_lag_readings", late)] == 0
    assert m[("polylink_export_lag_seconds", late)] == 0
