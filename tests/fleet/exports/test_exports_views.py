"""Destinations registered through the API, the UI and the CLI; the secret is never shown back."""

from fleet.cli import cli
from fleet.exports import registry
from fleet.web.auth import create_token

BODY = {"kind": "webhook", "url": "https://city.example/hook", "secret": "hmac-SECRET-1",
        "tags": ["park"]}


def test_api_put_get_list_delete_and_secret_write_only(client, auth_headers, db, settings):
    r = client.put("/api/v1/exports/city", json=BODY, headers=auth_headers)
    assert r.status_code == 403  # an operator's token: destinations and their secrets are admin's
    admin = {"Authorization": "Bearer " + create_token(db, "admin-t", role="admin")}
    r = client.put("/api/v1/exports/city", json=BODY, headers=admin)
    assert r.status_code == 200, r.json
    assert r.json["secret_set"] and r.json["tags"] == ["park"] and r.json["state"] == "up to date"
    assert r.json["behind"] == 0 and r.json["created"].endswith("Z")
    listed = client.get("/api/v1/exports", headers=admin)
    assert "hmac-SECRET-1" not in listed.get_data(as_text=True)
    assert [d["name"] for d in listed.json] == ["city"]
    one = client.get("/api/v1/exports/city", headers=admin)
    assert one.json["refused_items"] == [] and "hmac-SECRET-1" not in one.get_data(as_text=True)
    assert registry.destination(db, settings.data_dir, "city").secret == "hmac-SECRET-1"
    assert (settings.data_dir / registry.KEY_FILE).stat().st_mode & 0o077 == 0
    moved = client.put("/api/v1/exports/city", json=dict(BODY, secret=None,
                                                           url="https://evil.example/"),
                       headers=admin)
    assert moved.status_code == 400 and "secret" in moved.json["error"]
    bad = client.put("/api/v1/exports/city", json=dict(BODY, url="http://city.example/"),
                     headers=admin)
    assert bad.status_code == 400 and "https" in bad.json["error"]
    bad = client.put("/api/v1/exports/city", json=dict(BODY, colour="red"), headers=admin)
    assert bad.status_code == 400 and "colour" in bad.json["error"]
    bad = client.put("/api/v1/exports/city", json=dict(BODY, from_start="yes"), headers=admin)
    assert bad.status_code == 400 and "from_start" in bad.json["error"]
    assert client.get("/api/v1/exports").status_code == 401
    assert client.get("/api/v1/exports/nope", headers=admin).status_code == 404
    assert client.delete("/api/v1/exports/city", headers=admin).status_code == 204
    assert client.delete("/api/v1/exports/city", headers=admin).status_code == 404


def test_ui_form_saves_a_destination_and_never_shows_the_secret(client, user, form_token):
    r = client.post("/auth/login", data={"username": user[0], "password": user[1],
                                         "csrf_token": form_token(client, "/auth/login")})
    assert r.status_code == 302
    page = client.get("/exports/").get_data(as_text=True)
    assert "Export destinations" in page and "No destinations yet" in page
    data = {"name": "city", "kind": "webhook", "url": "https://city.example/hook",
            "secret": "hunter2-key", "nodes": "n1, n2", "tags": "", "options": "",
            "csrf_token": form_token(client, "/exports/")}
    r = client.post("/exports/", data=data, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Destination city saved" in page and "https://city.example/hook" in page
    assert "hunter2-key" not in page and "n1, n2" in page and "up to date" in page
    r = client.post("/exports/", data=dict(data, options="{not json"), follow_redirects=True)
    assert "Not saved: options must be a JSON object" in r.get_data(as_text=True)
    r = client.post("/exports/", data=dict(data, url="ftp://x"), follow_redirects=True)
    assert "Not saved: url must be" in r.get_data(as_text=True)
    r = client.post("/exports/", data={k: v for k, v in data.items() if k != "csrf_token"})
    assert r.status_code == 400  # no CSRF token
    r = client.post("/exports/city/remove", data={"csrf_token": form_token(client, "/exports/")},
                    follow_redirects=True)
    assert "Destination city removed" in r.get_data(as_text=True)


def test_cli_adds_lists_and_removes(runner, db):
    r = runner.invoke(cli, ["export", "add", "hook", "--kind", "webhook", "--url",
                            "https://city.example/h", "--tag", "park", "--secret-stdin"],
                      input="k3y\n")
    assert r.exit_code == 0, r.output
    assert "secret set" in r.output and "k3y" not in r.output
    r = runner.invoke(cli, ["export", "list"])
    assert "hook" in r.output and "up to date" in r.output and "k3y" not in r.output
    r = runner.invoke(cli, ["export", "add", "hook", "--kind", "webhook", "--url",
                            "https://other.example/h", "--no-secret"])
    assert r.exit_code == 0  # --no-secret removes the stored one: safe to move
    r = runner.invoke(cli, ["export", "add", "x", "--kind", "webhook", "--url", "http://e.org/",
                            "--no-secret"])
    assert r.exit_code == 1 and "https" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["export", "add", "x", "--kind", "webhook", "--url", "https://e.org/",
                            "--option", "nope", "--no-secret"])
    assert r.exit_code == 1 and "KEY=VALUE" in r.output
    assert runner.invoke(cli, ["export", "remove", "hook"]).exit_code == 0
    r = runner.invoke(cli, ["export", "remove", "hook"])
    assert r.exit_code == 1 and "no export destination" in r.output


def test_api_reader_logins_password_once_and_acl_written(client, db, settings):
    admin = {"Authorization": "Bearer " + create_token(db, "admin-t", role="admin")}
    r = client.put("/api/v1/exports/readers/grafana", json={"tags": ["park"]}, headers=admin)
    assert r.status_code == 201 and r.json["username"] == "polylink-reader-grafana"
    password = r.json["password"]
    listed = client.get("/api/v1/exports/readers", headers=admin)
    assert password not in listed.get_data(as_text=True)
    assert listed.json[0]["tags"] == ["park"] and listed.json[0]["topics"] == []
    acl = (settings.broker_dir / "acl").read_text()
    assert "user polylink-reader-grafana" in acl
    assert password not in (settings.broker_dir / "passwd").read_text()
    bad = client.put("/api/v1/exports/readers/Bad", json={}, headers=admin)
    assert bad.status_code == 400 and "name" in bad.json["error"]
    bad = client.put("/api/v1/exports/readers/x", json={"nodes": "n1"}, headers=admin)
    assert bad.status_code == 400 and "nodes" in bad.json["error"]
    taken = client.put("/api/v1/exports/readers", json={"kind": "webhook", "url": "https://x/"},
                       headers=admin)  # a destination may not hide the readers' URL
    assert taken.status_code == 405 and "PUT" not in taken.headers["Allow"]
    assert client.delete("/api/v1/exports/readers", headers=admin).status_code == 405
    assert client.delete("/api/v1/exports/readers/grafana", headers=admin).status_code == 204
    assert "polylink-reader-grafana" not in (settings.broker_dir / "acl").read_text()
    assert client.delete("/api/v1/exports/readers/grafana", headers=admin).status_code == 404
    r = client.put("/api/v1/exports/readers/grafana", json={}, headers={
        "Authorization": "Bearer " + create_token(db, "op", role="operator")})
    assert r.status_code == 403


def test_the_page_shows_a_down_destination_and_what_was_refused(logged_in, db, settings):
    import time

    from fleet.store import exports as export_store

    registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook",
                                         "url": "https://city.example/h"}, "k")
    export_store.advance(db, "city", (0, 0), (0, 0), 3, [("r:bad:0:0:1000", "HTTP 422 <b>no</b>")],
                         time.time())
    export_store.record_failure(db, "city", "cannot reach city.example:443: Connection refused",
                                time.time(), time.time() + 4)
    page = logged_in.get("/exports/").get_data(as_text=True)
    assert "down" in page and "cannot reach city.example:443: Connection refused" in page
    assert "r:bad:0:0:1000: HTTP 422 &lt;b&gt;no&lt;/b&gt;" in page  # escaped, never HTML
    assert "next try" in page


def test_pause_and_resume_from_the_page_and_the_cli(logged_in, runner, db, settings, form_token):
    registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook",
                                         "url": "https://city.example/h"}, "k")
    r = logged_in.post("/exports/city/enabled", data={
        "enabled": "0", "csrf_token": form_token(logged_in, "/exports/")}, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Destination city paused" in page and ">Resume<" in page
    assert registry.get(db, "city")["state"] == "paused"
    assert runner.invoke(cli, ["export", "resume", "city"]).exit_code == 0
    assert registry.get(db, "city")["enabled"]
    r = runner.invoke(cli, ["export", "pause", "nope"])
    assert r.exit_code == 1 and "no export destination" in r.output
