"""Bulk export of readings (API, CLI, node list): right rows, both formats, streamed, bad input."""

import csv
import io
import json

import pytest
from polylink import proto

from fleet.cli import cli
from fleet.ingest import Ingest
from fleet.nodes import export
from fleet.store import telemetry as telemetry_store
from fleet.web import auth

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def frame(seq, body, ts) -> bytes:
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[:proto.encode(buf, proto.TELEMETRY, seq, body, ts)])


def fill(db, nodes=("n01", "n02"), count=10, step=60):
    """count TELEMETRY frames per node (temperature, humidity), one every step seconds."""
    ing = Ingest(db)
    for node in nodes:
        for i in range(count):
            ing.add(f"pl/v1/{node}/up", frame(i, [(0, 0, 20 + i / 2), (1, 0, 40 + i)],
                                             int(T0 + i * step)), T0 + i * step + 1)
    ing.flush()


@pytest.fixture
def viewer(db):
    return {"Authorization": "Bearer " + auth.create_token(db, "reader", "viewer")}


def test_csv_of_chosen_nodes_in_a_time_range(client, db, viewer):
    fill(db, ("n01", "n02", "n03"))
    r = client.get("/api/v1/export", headers=viewer, query_string={
        "nodes": "n03,n01", "since": T0 + 120, "until": "2026-05-28T20:32:40Z"})
    assert r.status_code == 200 and r.mimetype == "text/csv"
    # Streamed: Flask gives a body it holds whole a Content-Length, a generator none. (Not
    # r.is_streamed: the test client streams every answer, so that held for any.)
    assert "Content-Length" not in r.headers
    assert 'filename="polylink-readings-20260528T202840Z-20260528T203240Z.csv"' in \
        r.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[0] == list(export.CSV_HEADER)
    # n03 then n01 as asked; each quantity oldest first; minutes 2..6 inclusive.
    assert [(row[0], row[2]) for row in rows[1:]] == (
        [("n03", "temperature")] * 5 + [("n03", "humidity")] * 5
        + [("n01", "temperature")] * 5 + [("n01", "humidity")] * 5)
    assert rows[1] == ["n03", "2026-05-28T20:28:40.000Z", "temperature", "Cel", "21.0"]
    assert rows[6][3:] == ["%RH", "42.0"]
    assert rows[-1][1] == "2026-05-28T20:32:40.000Z"


def test_senml_of_every_node_is_one_valid_pack(client, db, viewer):
    fill(db, ("n01", "n02"), count=3)
    r = client.get("/api/v1/export?format=senml", headers=viewer)
    assert r.status_code == 200 and r.mimetype == "application/senml+json"
    pack = json.loads(r.get_data())
    assert len(pack) == 12
    assert pack[0] == {"bn": "urn:dev:polylink:n01:", "n": "temperature", "u": "Cel", "v": 20.0,
                       "t": T0}
    assert [rec.get("bn") for rec in pack if "bn" in rec] == ["urn:dev:polylink:n01:",
                                                            "urn:dev:polylink:n02:"]
    assert {rec["n"] for rec in pack} == {"temperature", "humidity"}


def test_the_answer_streams_while_the_store_is_read(client, db, viewer, monkeypatch):
    """The first chunk leaves before later batches are queried: readings stored after it was
    read still arrive, which a response built whole at the start could not contain."""
    monkeypatch.setattr(export, "ROWS_PER_CHUNK", 5)
    fill(db, ("n01",), count=20)
    r = client.get("/api/v1/export?nodes=n01", headers=viewer, buffered=False)
    chunks = iter(r.response)
    first = next(chunks)
    first = first.decode() if isinstance(first, bytes) else first
    assert first.startswith("node_id,time") and first.count("\n") == 6  # header + 5 rows
    ing = Ingest(db)
    ing.add("pl/v1/n01/up", frame(100, [(0, 0, 99.5)], int(T0 + 3600)), T0 + 3601)
    ing.flush()
    rest = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    r.close()
    assert rest.count("\n") == 20 * 2 + 1 - 5
    assert "99.5" in rest


def test_iter_readings_is_a_generator_of_bounded_batches(db, monkeypatch):
    """Equal times across a batch boundary are neither lost nor repeated (keyset on t, id)."""
    ing = Ingest(db)
    for i in range(7):  # seven frames with the same device time
        ing.add("pl/v1/n01/up", frame(i, [(0, 0, float(i))], int(T0)), T0 + i)
    ing.flush()
    queries = []
    execute = db.conn.execute

    def counted(sql, *args):  # both dialects' connections: every statement iter_readings runs
        if "FROM readings" in sql:
            queries.append(sql)
        return execute(sql, *args)

    monkeypatch.setattr(db.conn, "execute", counted)
    rows = telemetry_store.iter_readings(db, ["n01"], batch=2)
    assert next(rows)[4] == 0.0 and len(queries) == 1  # one batch read for the first row
    values = [0.0] + [r[4] for r in rows]
    assert values == [float(i) for i in range(7)]
    assert len(queries) == 4  # ceil(7 / 2) batches, never the whole result at once


def test_bad_requests_say_what_was_wrong(client, db, viewer):
    fill(db, ("n01",), count=1)
    for query, status, words in (
        ({"format": "xml"}, 400, "format='xml'"),
        ({"since": "last tuesday"}, 400, "since='last tuesday'"),
        ({"since": T0 + 10, "until": T0}, 400, "since is after until"),
        ({"nodes": "n01,ghost"}, 404, "ghost"),
        ({"nodes": ",".join(f"n{i}" for i in range(10001))}, 400, "at most 10000"),
    ):
        r = client.get("/api/v1/export", headers=viewer, query_string=query)
        assert r.status_code == status and words in r.get_json()["error"], (query, r.data)
    assert client.get("/api/v1/export").status_code == 401


def test_cli_writes_a_file_or_standard_output(runner, db, tmp_path):
    fill(db, ("n01", "n02"), count=4)
    out = tmp_path / "may.csv"
    result = runner.invoke(cli, ["node", "export", "--nodes", "n02", "--since", "2026-05-28",
                                 "--until", "2026-05-28", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    assert len(rows) == 1 + 8 and {r[0] for r in rows[1:]} == {"n02"}
    result = runner.invoke(cli, ["node", "export", "--format", "senml", "--until", "2026-05-27"])
    assert result.exit_code == 0 and json.loads(result.output) == []
    result = runner.invoke(cli, ["node", "export", "--nodes", "ghost"])
    assert result.exit_code != 0 and "unknown node(s): ghost" in result.output
    result = runner.invoke(cli, ["node", "export", "--since", "soon"])
    assert result.exit_code != 0 and "--since='soon'" in result.output


def test_node_list_downloads_the_matching_nodes(logged_in, db):
    fill(db, ("n01", "n02"), count=2)
    page = logged_in.get("/nodes/?q=n02").get_data(as_text=True)
    assert 'id="export"' in page and 'name="q" value="n02"' in page.split('id="export"')[1]
    r = logged_in.get("/nodes/_export", query_string={"q": "n02", "format": "csv"})
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert {row[0] for row in list(csv.reader(io.StringIO(r.get_data(as_text=True))))[1:]} \
        == {"n02"}
    r = logged_in.get("/nodes/_export", query_string={"until": "2026-05-27"})
    assert r.get_data(as_text=True) == ",".join(export.CSV_HEADER) + "\n"
    r = logged_in.get("/nodes/_export", query_string={"format": "xml"})
    assert r.status_code == 400 and "format" in r.get_data(as_text=True)


def test_node_list_download_needs_a_login(client):
    r = client.get("/nodes/_export")
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]


def test_a_date_alone_as_until_means_its_whole_day(client, db, viewer):
    fill(db, ("n01",), count=3)
    r = client.get("/api/v1/export?until=2026-05-28&format=senml", headers=viewer)
    assert len(r.get_json()) == 6
    r = client.get("/api/v1/export?until=2026-05-28T00:00:00&format=senml", headers=viewer)
    assert r.get_json() == []
