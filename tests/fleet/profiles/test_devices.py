"""Registering other suppliers' devices: the TR005 QR parser, DevEUI-only codes, CSV import."""

import pytest

from fleet.profiles import devices, service
from fleet.providers.worker import ProviderIngest
from fleet.store import audit as audit_store
from fleet.store import providers as provider_store


def test_tr005_code_with_options():
    got = devices.parse_qr("LW:D0:1122334455667788:70b3d57ed0001001:AABB1122:O0123:SABC-9:CAF12")
    assert got == {"dev_eui": "70B3D57ED0001001", "join_eui": "1122334455667788",
                   "vendor_id": "AABB", "vendor_profile_id": "1122", "owner_token": "0123",
                   "serial": "ABC-9", "checksum": "AF12"}


def test_tr005_minimal_code():
    assert devices.parse_qr("LW:D0:0000000000000000:70B3D57ED0001001:00000000")["dev_eui"] == \
        "70B3D57ED0001001"


@pytest.mark.parametrize("text", ["70B3D57ED0001001", "70-b3-d5-7e-d0-00-10-01",
                                  " 70:B3:D5:7E:D0:00:10:01 "])
def test_deveui_only_codes(text):
    assert devices.parse_qr(text) == {"dev_eui": "70B3D57ED0001001"}


@pytest.mark.parametrize("text, why", [
    ("LW:D1:1122334455667788:70B3D57ED0001001:AABB1122", "LW:D0:"),
    ("LW:D0:1122:70B3D57ED0001001:AABB1122", "JoinEUI '1122' is not 16 hex"),
    ("LW:D0:1122334455667788:70B3D57ED000100:AABB1122", "DevEUI"),
    ("LW:D0:1122334455667788:70B3D57ED0001001:AABB", "ProfileID"),
    ("https://example.com/x", "neither a TR005"), ("", "neither")])
def test_bad_codes_say_why(text, why):
    with pytest.raises(devices.DeviceError, match=why):
        devices.parse_qr(text)


def test_csv_import_registers_devices_on_every_provider(db, tmp_path):
    service.save(db, {"name": "lpp-sensor", "codec": "lpp", "interval": 900})
    text = ("dev_eui,name,profile,position\n"
            "70B3D57ED0001001,Park gate,lpp-sensor,52.37 4.89\n"
            "70B3D57ED0001002,Bridge,lpp-sensor,\n"
            "70B3D57ED0001001,Again,lpp-sensor,\n"
            "70B3D57ED0001003,Nope,no-such-profile,\n"
            "70B3D57ED0001004,Ours,polylink,\n")
    out = devices.import_csv(db, text, actor="tech")
    assert [r["ok"] for r in out] == [True, True, False, False, False]
    assert "node '70b3d57ed0001001' exists already" in out[2]["error"]
    assert "no device profile named 'no-such-profile'" in out[3]["error"]
    node = next(db.query("SELECT * FROM nodes WHERE id = ?", ["70b3d57ed0001001"]))
    assert (node["name"], node["lat"], node["lon"], node["profile"], node["interval"]) == \
        ("Park gate", 52.37, 4.89, "lpp-sensor", 900)
    assert provider_store.resolve(db, "any-provider")["70B3D57ED0001002"] == "70b3d57ed0001002"
    assert audit_store.audit_log(db, target="70b3d57ed0001001")[0]["action"] == "device.register"
    # The provider ingest finds it whichever network it comes through.
    assert "70B3D57ED0001001" in ProviderIngest(db, "ttn", "tts").ids


@pytest.mark.parametrize("text, why", [("", "no rows"), ("dev_eui,name\nX,Y\n", "lacks profile")])
def test_bad_csv(db, text, why):
    with pytest.raises(devices.DeviceError, match=why):
        devices.import_csv(db, text)


def test_other_suppliers_devices_are_not_commanded_or_updated(db, settings):
    from fleet.nodes import commands
    from fleet.store import nodes as node_store

    service.save(db, {"name": "lpp-sensor", "codec": "lpp"})
    devices.register(db, "70B3D57ED0001001", "lpp-sensor")
    node_store.enrol_node(db, "ours-1")
    with pytest.raises(commands.BadCommand, match="does not speak the Polylink protocol"):
        commands.send_command(db, settings, "70b3d57ed0001001", "reboot")
    with pytest.raises(commands.BadCommand, match="does not speak"):
        commands.send_config(db, settings, "70b3d57ed0001001", interval=60)
    assert [n["id"] for n in node_store.select_target(db, {})] == ["ours-1"]
