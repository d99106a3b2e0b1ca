"""`fleet profile`, `fleet device`, `fleet supplier`: the library's work, one-line errors."""

import json
from pathlib import Path

from fleet.cli import cli
from fleet.store import profiles as profile_store

CODEC = Path(__file__).parent / "codecs" / "vendor_weather.js"


def test_profile_device_and_supplier_commands(runner, db, tmp_path):
    fields = tmp_path / "fields.json"
    fields.write_text(json.dumps([{"field": "air.temperature_f", "quantity": "temperature",
                                   "unit": "°F"}]))
    r = runner.invoke(cli, ["profile", "try", "--codec", "js", "--source", str(CODEC),
                            "--fields", str(fields), "--fport", "2", "02D227953010B8"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["pasted"][0]["readings"][0]["name"] == "temperature"
    r = runner.invoke(cli, ["profile", "try", "--codec", "js", "--source", str(CODEC), "00"])
    assert r.exit_code == 1 and "1 payload(s) did not decode" in r.output
    r = runner.invoke(cli, ["profile", "set", "acme", "--codec", "js", "--source", str(CODEC),
                            "--fields", str(fields), "--interval", "600"])
    assert r.exit_code == 0 and "profile acme saved (version 1)" in r.output
    r = runner.invoke(cli, ["profile", "set", "bad", "--codec", "js"])
    assert r.exit_code == 1 and r.output.startswith("Error: a js profile needs")
    csv = tmp_path / "devices.csv"
    csv.write_text("dev_eui,name,profile,position\n70B3D57ED0001001,Roof,acme,52.1 4.3\n"
                   "zz,Bad,acme,\n")
    r = runner.invoke(cli, ["device", "import", str(csv)])
    assert r.exit_code == 1 and "line 2: 70b3d57ed0001001" in r.output
    assert "1 of 2 rows not registered" in r.output
    r = runner.invoke(cli, ["profile", "list"])
    assert "acme" in r.output and "every 600 s" in r.output
    r = runner.invoke(cli, ["supplier", "add", "acme-cloud"])
    assert r.exit_code == 0 and r.output.startswith("pls_")
    r = runner.invoke(cli, ["supplier", "assign", "70b3d57ed0001001", "acme-cloud"])
    assert r.exit_code == 0
    assert profile_store.supplier_nodes(db, "acme-cloud") == {"70b3d57ed0001001": "acme"}
    r = runner.invoke(cli, ["profile", "remove", "acme"])
    assert r.exit_code == 1 and "has 1 node(s)" in r.output


def test_profile_command_errors_are_one_liners(runner, db):
    runner.invoke(cli, ["profile", "set", "lpp-sensor", "--codec", "lpp"])
    runner.invoke(cli, ["device", "add", "70B3D57ED0001001", "--profile", "lpp-sensor"])
    r = runner.invoke(cli, ["command", "profile", "70b3d57ed0001001", "open-valve"])
    assert r.exit_code == 1
    assert r.output == "Error: profile lpp-sensor has no command 'open-valve'; it has none\n"
    r = runner.invoke(cli, ["command", "profile", "70b3d57ed0001001", "x", "--data", "{"])
    assert r.exit_code == 1 and "--data is not JSON" in r.output
