"""Profiles and devices through the REST API and the pages: roles, errors, audit, try-out."""

import io
from pathlib import Path

from fleet.store import audit as audit_store
from fleet.store.nodes import get_node
from fleet.web.auth import create_token

CODECS = Path(__file__).parent / "codecs"
WEATHER = {"codec": "js", "source": (CODECS / "vendor_weather.js").read_text(), "interval": 600,
           "fields": [{"field": "air.temperature_f", "quantity": "temperature", "unit": "°F"}]}


def test_api_profile_lifecycle(client, auth_headers, db):
    assert [p["name"] for p in client.get("/api/v1/profiles", headers=auth_headers).json] == \
        ["polylink"]
    r = client.put("/api/v1/profiles/acme-weather", json=WEATHER, headers=auth_headers)
    assert r.status_code == 200 and r.json["version"] == 1
    r = client.put("/api/v1/profiles/acme-weather", json=dict(WEATHER, interval=900),
                   headers=auth_headers)
    assert r.json["version"] == 2 and r.json["interval"] == 900
    assert client.get("/api/v1/profiles/acme-weather", headers=auth_headers).json["fields"][0][
        "unit"] == "°F"
    r = client.post("/api/v1/devices", json={"qr": "LW:D0:0000000000000000:70B3D57ED0001001:"
                                                   "00000000", "profile": "acme-weather",
                                             "name": "Roof", "lat": 52.1, "lon": 4.3},
                    headers=auth_headers)
    assert r.status_code == 201 and r.json == {"node_id": "70b3d57ed0001001"}
    r = client.delete("/api/v1/profiles/acme-weather", headers=auth_headers)
    assert r.status_code == 409 and "has 1 node" in r.json["error"]
    r = client.put("/api/v1/nodes/70b3d57ed0001001/profile", json={"profile": "nope"},
                   headers=auth_headers)
    assert r.status_code == 404
    actions = [e["action"] for e in audit_store.audit_log(db)]
    assert actions[:3] == ["device.register", "profile.update", "profile.create"]


def test_api_errors_say_what_is_wrong(client, auth_headers):
    r = client.put("/api/v1/profiles/x", json=dict(WEATHER, fields=[
        {"field": "t", "quantity": "temperature", "unit": "hPa"}]), headers=auth_headers)
    assert r.status_code == 400 and "cannot convert 'hPa' to 'Cel'" in r.json["error"]
    r = client.put("/api/v1/profiles/polylink", json={"codec": "lpp"}, headers=auth_headers)
    assert r.status_code == 400 and "cannot be changed" in r.json["error"]
    r = client.delete("/api/v1/profiles/polylink", headers=auth_headers)
    assert r.status_code == 400
    r = client.post("/api/v1/devices", json={"dev_eui": "xyz", "profile": "p"},
                    headers=auth_headers)
    assert r.status_code == 400 and "neither a TR005" in r.json["error"]


def test_try_a_codec_before_saving(client, auth_headers, db):
    r = client.post("/api/v1/profiles/try", json=dict(WEATHER, payloads=[
        "02D227953010B8", "AtInlTAQuA==", "0001"], fport=2), headers=auth_headers)
    assert r.status_code == 200
    first, second, third = r.json["pasted"]
    assert first["readings"][0]["quantity"] == 0
    assert round(first["readings"][0]["value"], 3) == 22.333
    assert second["readings"] == first["readings"]  # the same bytes in base64
    assert third["error"] == "payload too short: 2 bytes, need 7" and r.json["bad"] == 1
    assert client.get("/api/v1/profiles", headers=auth_headers).json[-1]["name"] == "polylink"


def test_viewers_read_but_do_not_change(client, db):
    viewer = {"Authorization": f"Bearer {create_token(db, 'v', 'viewer')}"}
    assert client.get("/api/v1/profiles", headers=viewer).status_code == 200
    assert client.put("/api/v1/profiles/x", json=WEATHER, headers=viewer).status_code == 403
    assert client.post("/api/v1/profiles/try", json=WEATHER, headers=viewer).status_code == 403
    assert client.post("/api/v1/devices", json={}, headers=viewer).status_code == 403


def test_csv_through_the_api(client, auth_headers):
    client.put("/api/v1/profiles/lpp-sensor", json={"codec": "lpp"}, headers=auth_headers)
    r = client.post("/api/v1/devices", data="dev_eui,name,profile,lat,lon\n"
                    "70B3D57ED0001001,A,lpp-sensor,52,4\n70B3D57ED0001002,B,nope,,\n",
                    content_type="text/csv", headers=auth_headers)
    assert [x["ok"] for x in r.json] == [True, False]


def test_page_tries_a_pasted_payload_then_saves(logged_in, form_token):
    token = form_token(logged_in, "/profiles/")
    form = {"csrf_token": token, "name": "acme-weather", "codec": "js",
            "source": WEATHER["source"], "fields": '[{"field": "air.temperature_f",'
            ' "quantity": "temperature", "unit": "°F"}]', "interval": "600",
            "payload": "02D227953010B8", "fport": "2", "action": "try"}
    page = logged_in.post("/profiles/", data=form).get_data(as_text=True)
    assert "temperature: 22.3333 Cel" in page and "Decoded (0 bad)" in page
    assert "acme-weather</td>" not in page  # tried, not saved
    r = logged_in.post("/profiles/", data=dict(form, action="save"))
    assert r.status_code == 302
    assert "acme-weather" in logged_in.get("/profiles/").get_data(as_text=True)


def test_devices_page_registers_by_code_and_csv(logged_in, form_token, db):
    token = form_token(logged_in, "/profiles/")
    logged_in.post("/profiles/", data={"csrf_token": token, "name": "lpp-sensor", "codec": "lpp",
                                       "fields": "[]", "action": "save"})
    token = form_token(logged_in, "/devices/add")
    r = logged_in.post("/devices/add", data={"csrf_token": token, "code": "70B3D57ED0001001",
                                             "profile": "lpp-sensor", "name": "Gate"})
    assert r.status_code == 302 and get_node(db, "70b3d57ed0001001")["name"] == "Gate"
    csv = b"dev_eui,name,profile,position\n70B3D57ED0001002,Bridge,lpp-sensor,52.3 4.8\n"
    page = logged_in.post("/devices/add", data={
        "csrf_token": token, "csv": (io.BytesIO(csv), "devices.csv")},
        content_type="multipart/form-data").get_data(as_text=True)
    assert "1 of 1 devices registered" in page
    assert next(db.query("SELECT lat FROM nodes WHERE id = ?", ["70b3d57ed0001002"]))["lat"] == 52.3


def test_node_page_and_api_name_the_profile(logged_in, client, auth_headers, db):
    client.put("/api/v1/profiles/lpp-sensor", json={"codec": "lpp"}, headers=auth_headers)
    client.post("/api/v1/devices", json={"dev_eui": "70B3D57ED0001009", "profile": "lpp-sensor"},
                headers=auth_headers)
    page = logged_in.get("/nodes/70b3d57ed0001009").get_data(as_text=True)
    assert "<dt>Profile</dt>" in page and ">lpp-sensor</a>" in page
    node = client.get("/api/v1/nodes/70b3d57ed0001009", headers=auth_headers).json
    assert node["profile"] == "lpp-sensor"
