"""The `fleet` command line, through click's CliRunner on a fresh DATA_DIR."""

import re
from pathlib import Path

import click
import pytest
from polylink import proto

from fleet.cli import cli
from fleet.ingest import Ingest
from fleet.store import commands as command_store
from fleet.store import migrate
from fleet.store import nodes as node_store
from fleet.store import users as user_store

DOCS = Path(__file__).resolve().parents[3] / "docs" / "fleet.md"


def all_commands(group=cli, prefix="fleet"):
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


def test_every_command_has_help_with_an_example_and_is_documented():
    docs = DOCS.read_text()
    for path, command in all_commands():
        assert command.help and re.search(r"Example: .*\bfleet\b", command.help), path
        assert f"`{path}" in docs, f"{path} is missing from docs/fleet.md"


def test_user_add_with_password_stdin(runner, db):
    r = runner.invoke(cli, ["user", "add", "alice", "--role", "admin", "--password-stdin"],
                      input="long enough pw\n")
    assert r.exit_code == 0, r.output
    assert user_store.get_user(db, "alice")["role"] == "admin"
    r = runner.invoke(cli, ["user", "add", "alice", "--password-stdin"], input="long enough pw\n")
    assert r.exit_code == 1 and "Error: user 'alice' already exists" in r.output
    r = runner.invoke(cli, ["user", "add", "bob", "--password-stdin"], input="short\n")
    assert r.exit_code == 1 and "at least 8" in r.output
    assert "Traceback" not in r.output


def test_user_add_prompts_for_the_password(runner, db):
    r = runner.invoke(cli, ["user", "add", "carol"], input="a-good-pass\na-good-pass\n")
    assert r.exit_code == 0, r.output
    assert user_store.get_user(db, "carol")["role"] == "viewer"
    assert "viewer is the default" in r.output


def test_token_create_prints_the_token_once_and_stores_a_hash(runner, db):
    r = runner.invoke(cli, ["token", "create", "grafana"])
    assert r.exit_code == 0
    assert "grafana (viewer) created; viewer is the default" in r.stderr
    token = r.stdout.strip()
    assert user_store.token_info(db, token)["role"] == "viewer"
    assert re.fullmatch(r"plt_[A-Za-z0-9_-]{40,}", token)
    assert user_store.token_name(db, token) == "grafana"
    assert token not in str(list(db.query("SELECT * FROM api_tokens")))
    r = runner.invoke(cli, ["token", "create", "grafana"])
    assert r.exit_code == 1 and "already exists" in r.output


def test_db_migrate(runner, settings):
    r = runner.invoke(cli, ["db", "migrate"])
    assert r.exit_code == 0 and f"-> {migrate.SCHEMA_VERSION}" in r.output
    r = runner.invoke(cli, ["db", "migrate"])
    assert f"{migrate.SCHEMA_VERSION} -> {migrate.SCHEMA_VERSION}" in r.output


def test_nodes_node_show_and_bad_frames(runner, db):
    assert "no nodes yet" in runner.invoke(cli, ["nodes"]).output
    buf = bytearray(64)
    n = proto.encode(buf, proto.TELEMETRY, 1, [(0, 0, 21.5), (2, 0, 3.71)])
    ing = Ingest(db)
    ing.add("pl/v1/n1/up", bytes(buf[:n]), 1_700_000_000.0)
    ing.add("pl/v1/n1/up", b"\xff", 1_700_000_001.0)
    ing.flush()
    out = runner.invoke(cli, ["nodes"]).output
    assert re.search(r"n1\s+online\s+2023-11-14T22:13:20Z\s+-\s+-\s+3.71 V", out), out
    n = proto.encode(buf, proto.STATUS, 2, {"fw": "0.2.0", "uptime": 5, "micropython": "1.24.1"})
    ing.add("pl/v1/n1/up", bytes(buf[:n]), 1_700_000_000.0)
    ing.flush()
    out = runner.invoke(cli, ["nodes"]).output
    assert re.search(r"n1\s+online\s+2023-11-14T22:13:20Z\s+0.2.0\s+1.24.1\s+3.71 V", out), out
    out = runner.invoke(cli, ["node", "show", "n1"]).output
    assert "temperature" in out and "21.5 Cel" in out
    r = runner.invoke(cli, ["node", "show", "ghost"])
    assert r.exit_code == 1 and r.output.strip() == "Error: unknown node 'ghost'"
    out = runner.invoke(cli, ["bad-frames", "n1"]).output
    assert "1 bad frames in total" in out and " ff " in out and "truncated" in out
    assert "n1" in runner.invoke(cli, ["bad-frames"]).output


def test_command_send_errors_are_one_liners(runner, db, monkeypatch):
    node_store.enrol_node(db, "n1")
    monkeypatch.setenv("MQTT_PORT", "1")
    r = runner.invoke(cli, ["command", "send", "n1", "identify"])
    assert r.exit_code == 1 and "cannot reach the broker" in r.output
    r = runner.invoke(cli, ["command", "send", "n1", "set-interval"])
    assert r.exit_code == 1 and "integer arg" in r.output
    r = runner.invoke(cli, ["command", "send", "ghost", "reboot"])
    assert r.exit_code == 1 and "unknown node" in r.output
    r = runner.invoke(cli, ["command", "send", "n1", "explode"])
    assert r.exit_code == 2 and "explode" in r.output
    monkeypatch.setenv("MQTT_PORT", "not-a-port")
    r = runner.invoke(cli, ["command", "send", "n1", "identify"])
    assert r.exit_code == 1 and "MQTT_PORT" in r.output


def test_command_send_through_the_broker(runner, db, mosquitto, monkeypatch):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    node_store.enrol_node(db, "n1")
    monkeypatch.setenv("MQTT_PORT", str(mosquitto.port))
    got = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(proto.decode(m.payload))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe("pl/v1/n1/down", qos=1)
    sub.loop_start()
    import time

    time.sleep(0.3)
    r = runner.invoke(cli, ["command", "send", "n1", "set-interval", "120"])
    assert r.exit_code == 0, r.output
    cid = int(re.search(r"command (\d+) sent", r.output).group(1))
    deadline = time.time() + 10
    while not got and time.time() < deadline:
        time.sleep(0.05)
    sub.loop_stop()
    assert got and got[0][3] == {"cid": cid, "cmd": 2, "arg": 120}
    assert command_store.get_command(db, "n1", cid)["created_by"] == "cli"


@pytest.mark.parametrize("args", [["--help"], ["user", "add", "--help"], ["run", "--help"]])
def test_help(runner, args):
    r = runner.invoke(cli, args)
    assert r.exit_code == 0 and "Example:" in r.output
