"""The NGSI-LD read side on the fleet's own data: /ngsi-ld/v1/entities and the temporal API,
with the API's bearer tokens; answers expand with pyld like the pushed payloads."""

from ngsild_ld import expand
from test_webhook_delivery import ingest

from fleet.store import nodes as node_store

T0 = 1_700_000_000


def setup(db):
    ingest(db, "n1", 1, 10)  # temperature 21..30 (20 + seq % 10), humidity 50 % at T0 + seq
    ingest(db, "n2", 5, 1)
    node_store.set_place(db, "n1", 52.52, 13.405, "Marktplatz")


def test_needs_a_token_and_answers_problem_details(client, db, auth_headers):
    r = client.get("/ngsi-ld/v1/entities?type=Device")
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    assert r.json["type"] == "https://uri.etsi.org/ngsi-ld/errors/Unauthorized"
    r = client.get("/ngsi-ld/v1/entities", headers=auth_headers)
    assert r.status_code == 400 and r.json["type"].endswith("/BadRequestData")
    r = client.get("/ngsi-ld/v1/entities?type=Device&limit=x", headers=auth_headers)
    assert r.status_code == 400 and "limit" in r.json["detail"]
    r = client.get("/ngsi-ld/v1/entities?q=temperature~1", headers=auth_headers)
    assert r.status_code == 400 and r.json["type"].endswith("/InvalidRequest")


def test_entities_by_type_id_q_attrs_and_paging(client, db, auth_headers):
    setup(db)
    r = client.get("/ngsi-ld/v1/entities?type=Device&count=true", headers=auth_headers)
    assert r.status_code == 200 and r.headers["NGSILD-Results-Count"] == "2"
    assert "/static/ngsi-ld-context.jsonld>" in r.headers["Link"]
    n1 = next(e for e in r.json if e["id"] == "urn:ngsi-ld:Device:polylink:n1")
    assert n1["location"]["value"]["coordinates"] == [13.405, 52.52]
    r = client.get("/ngsi-ld/v1/entities?type=WeatherObserved", headers=auth_headers)
    (w1,) = [e for e in r.json if e["id"] == "urn:ngsi-ld:WeatherObserved:polylink:n1"]
    assert w1["temperature"] == {"type": "Property", "value": 20.0, "unitCode": "CEL",
                                 "observedAt": "2023-11-14T22:13:30.000Z"}
    assert w1["relativeHumidity"]["value"] == 0.5
    assert expand(w1, "https://fleet.example/static/ngsi-ld-context.jsonld")["@type"] == [
        "https://smartdatamodels.org/dataModel.Weather/WeatherObserved"]
    r = client.get("/ngsi-ld/v1/entities?type=WeatherObserved&q=temperature>=25",
                   headers=auth_headers)
    assert [e["id"] for e in r.json] == ["urn:ngsi-ld:WeatherObserved:polylink:n2"]
    r = client.get("/ngsi-ld/v1/entities?type=WeatherObserved&attrs=temperature",
                   headers=auth_headers)
    assert all(set(e) == {"id", "type", "temperature"} for e in r.json)
    r = client.get("/ngsi-ld/v1/entities?type=Device,WeatherObserved&limit=1&offset=1",
                   headers=auth_headers)
    assert len(r.json) == 1
    r = client.get("/ngsi-ld/v1/entities?id=urn:ngsi-ld:Device:polylink:n2",
                   headers=auth_headers)
    assert [e["id"] for e in r.json] == ["urn:ngsi-ld:Device:polylink:n2"]
    r = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:polylink:n2", headers=auth_headers)
    assert r.json["deviceState"]["value"] == "online"
    r = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:polylink:zz", headers=auth_headers)
    assert r.status_code == 404 and r.json["type"].endswith("/ResourceNotFound")


def test_temporal_history_with_timerel(client, db, auth_headers):
    setup(db)
    url = "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WeatherObserved:polylink:n1"
    r = client.get(url, headers=auth_headers)
    assert r.status_code == 200
    temps = r.json["temperature"]
    assert [i["value"] for i in temps] == [21, 22, 23, 24, 25, 26, 27, 28, 29, 20]
    assert temps[0]["observedAt"] == "2023-11-14T22:13:21.000Z"
    r = client.get(url + "?timerel=between&timeAt=2023-11-14T22:13:23Z"
                   "&endTimeAt=2023-11-14T22:13:25Z&attrs=temperature", headers=auth_headers)
    assert [i["value"] for i in r.json["temperature"]] == [23, 24, 25]
    assert set(r.json) == {"id", "type", "temperature"}
    r = client.get(url + "?timerel=before&timeAt=2023-11-14T22:13:23Z", headers=auth_headers)
    assert [i["value"] for i in r.json["temperature"]] == [21, 22]
    r = client.get(url + "?timerel=after&timeAt=2023-11-14T22:13:28Z&lastN=1",
                   headers=auth_headers)
    assert [i["value"] for i in r.json["temperature"]] == [20]
    r = client.get(url + "?timerel=between&timeAt=2023-11-14T22:13:23Z", headers=auth_headers)
    assert r.status_code == 400 and "endTimeAt" in r.json["detail"]
    r = client.get(url + "?timerel=during", headers=auth_headers)
    assert r.status_code == 400
    r = client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WeatherObserved:polylink:zz",
                   headers=auth_headers)
    assert r.status_code == 404
