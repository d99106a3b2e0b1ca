"""Every page of the web UI on a 360 px phone, in a real Chromium, with real data on it.

The pages are every GET route of the URL map that answers HTML, so a new page is checked without
anyone remembering to add it here. Each must fit 360 px without sideways scrolling, and the text
of every chart must render at 12 px or more. Screenshots of every page land in the artifacts.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from polylink import proto
from services import READY, fleet_db

from fleet import create_app
from fleet.exports import registry as export_registry
from fleet.identity import claims, provision
from fleet.ingest import Ingest
from fleet.ota import releases, rollouts
from fleet.profiles import devices, service
from fleet.providers import registry
from fleet.senml import intake
from fleet.settings import Settings
from fleet.store import alerts as alert_store
from fleet.store import profiles as profile_store
from fleet.store.migrate import open_db
from fleet.web import auth

HERE = Path(__file__).resolve().parent
PASSWORD = "a-long-password"
CHROMIUM = "/usr/bin/chromium"
NODES = ["lamppost-0001", "lamppost-0002", "bridge-north-0003"]
CODEC = HERE.parent / "fleet" / "profiles" / "codecs" / "vendor_weather.js"
# GET routes that are not pages a person reads: the machine interfaces, by blueprint, and files.
NOT_PAGES = ("api.", "ota_files.", "static", "metrics.", "ngsild.")  # ngsild.: NGSI-LD JSON API
NOT_PAGE_ENDPOINTS = {"nodes.live",  # an event stream for the node page's live values
                      "nodes.export_readings"}  # the node list's CSV or SenML download
FILE = re.compile(r"\.[a-z]+$")


def frame(mtype, seq, body, ts=None) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[:proto.encode(buf, mtype, seq, body, ts)])


def seed(db, settings) -> dict:
    """A small real fleet: nodes with two hours of readings, a release being rolled out, a
    provider, a pending claim, open alerts and the audit entries all of that leaves."""
    for name in NODES:
        provision.register(db, settings, name, board="ESP32_GENERIC", actor="boss")
    now = time.time()
    ing = Ingest(db)
    for k, node in enumerate(NODES):
        for i in range(24):
            t = now - 7200 + 300 * i
            body = [(0, 0, 18.0 + k + i / 10), (0, 1, 21.5 - i / 20), (1, 0, 48.0 + i / 2),
                    (4, 0, 101320.0 + 10 * i), (2, 0, 3.1 if k == 0 else 3.9)]
            ing.add(f"pl/v1/{node}/up", frame(proto.TELEMETRY, i, body), t)
        ing.add(f"pl/v1/{node}/up", frame(proto.STATUS, 100, {
            "fw": "0.1.0", "uptime": 7200, "boots": 1, "interval": 300, "rssi": -67 - k}), now)
    ing.flush()
    releases.create_key(settings, "k1")
    bundle = releases.build(settings, "0.9.0")
    releases.upload(db, settings, bundle.read_bytes(), actor="boss")
    rid = rollouts.create(db, "0.9.0", {"nodes": NODES[:2]}, actor="boss")
    registry.add(db, settings.data_dir, {
        "name": "city-things-stack", "kind": "tts", "host": "eu1.cloud.thethings.network",
        "tls": True, "application": "city-environmental-sensors-2026",
        "username": "city-environmental-sensors-2026@ttn"}, "an-api-key", actor="boss")
    export_registry.add(db, settings.data_dir, {
        "name": "city-data-platform", "kind": "webhook", "tags": ["environmental-sensors"],
        "url": "https://data-platform.city.example/ingest/polylink/environmental-webhook"},
        "a-hook-key", actor="boss")
    token = claims.create_token(db, settings, "ESP32_GENERIC", uses=5, actor="boss")
    answer = claims.request(db, settings, token.split(".")[0], "claim-client-7f3a",
                            json.dumps({"mac": "24:6f:28:aa:bb:cc"}).encode())
    assert answer["state"] == "pending", answer
    alert_store.evaluate_alerts(db)
    assert alert_store.list_alerts(db), "the low battery opened no alert"
    # Another supplier's device whose profile has downlink commands, given to a supplier.
    service.save(db, {"name": "acme-weather-station-wx2", "codec": "js", "interval": 600,
                      "source": CODEC.read_text(), "commands": [
                          {"name": "set-reporting-interval", "data": {"interval": 900}}]})
    vendor = devices.register(db, "70B3D57ED0001002", "acme-weather-station-wx2",
                              "Roof of the town hall", actor="boss")
    intake.add_supplier(db, "acme-environmental-cloud", actor="boss")
    profile_store.set_supplier(db, vendor, "acme-environmental-cloud", actor="boss")
    return {"node_id": NODES[0], "rid": rid, "vendor": vendor}


def pages(app, values: dict) -> list[str]:
    """The path of every HTML page of the URL map, its arguments filled with real ids."""
    out = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if ("GET" not in rule.methods or rule.endpoint.startswith(NOT_PAGES)
                or rule.endpoint in NOT_PAGE_ENDPOINTS or FILE.search(rule.rule)):
            continue
        missing = rule.arguments - values.keys()
        assert not missing, f"{rule.rule}: give the test a real {', '.join(missing)}"
        path = rule.rule
        for name in rule.arguments:
            path = re.sub(rf"<(?:[a-z]+:)?{name}>", str(values[name]), path)
        out.append(path)
    return out


def test_every_page_fits_a_phone_and_charts_are_readable(fleet_run, tmp_path, artifacts):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it as root "
                    "(tests/system-packages)")
    if not (HERE / "node_modules" / "playwright-core").exists():
        pytest.fail("tests/browser/node_modules is missing; run `make setup`")
    for old in artifacts.glob("*.png"):
        old.unlink()
    data = tmp_path / "data"
    run = fleet_run()
    run.wait_for(READY, timeout=60)
    settings = Settings(data_dir=data, port=run.port, mqtt_port=run.mqtt_port, mqtt_url=None)
    db = open_db(fleet_db(data))
    auth.create_user(db, "boss", PASSWORD, "admin")
    values = seed(db, settings)
    app = create_app({"SETTINGS": settings, "SECRET_KEY": "only-for-the-url-map"})
    paths = pages(app, values)
    assert {"/", "/nodes/", f"/nodes/{NODES[0]}", "/updates/", "/providers/",
            "/provision/", "/suppliers/"} <= set(paths), paths
    # Variants of a page that show more than its plain path does.
    paths += ["/alerts/?all=1", f"/nodes/{NODES[0]}?range=1h", "/nodes/no-such-node",
              f"/nodes/{values['vendor']}"]  # its profile-command form
    browser = subprocess.run(
        [shutil.which("node") or "node", str(HERE / "phone.mjs")],
        env=dict(os.environ, BASE=f"http://127.0.0.1:{run.port}", USER="boss",
                 PASSWORD=PASSWORD, PAGES=json.dumps(paths), ARTIFACTS=str(artifacts),
                 CHROMIUM=CHROMIUM),
        cwd=HERE, capture_output=True, text=True, timeout=300)
    assert browser.returncode == 0, browser.stdout + browser.stderr + run.output()
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    too_wide = {p: w for p, w in seen["widths"].items() if w > 360}
    assert not too_wide, f"pages wider than a 360 px phone: {too_wide} ({seen['wide']})"
    assert set(seen["widths"]) == set(paths)
    # Two temperatures, humidity, pressure, battery; RSSI, heap and queue.
    assert len(seen["charts"]) >= 8, seen["charts"]
    small = [c for c in seen["charts"] if c["smallest"] < 12]
    assert not small, f"chart text under 12 px on a phone: {small}"
    titles = {c["title"] for c in seen["charts"]}
    assert {"Temperature in °C", "Temperature (sensor 2) in °C", "Humidity in %",
            "Air pressure in hPa"} <= titles, titles
    texts = " ".join(t for c in seen["charts"] for t in c["texts"])
    assert not re.search(r"\d[eE][+-]?\d|Cel|\bPa\b|/1\b", texts), texts
    assert len([p for p in artifacts.glob("*.png") if "." not in p.stem]) == len(paths)
