"""Update keys rotate over the air: every release carries the fleet's trusted keys, a node that
confirms a release reports the keys it trusts from then on, and rollouts and key retirement refuse
what would strand nodes. The node's side is in tests/firmware/test_ota.py (also under wasm)."""

import json

import pytest
from polylink import proto

from fleet.cli import cli
from fleet.identity import provision
from fleet.ingest import Ingest
from fleet.ota import releases as ota
from fleet.ota import rollouts
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store.base import transaction

TARGET = {"nodes": ["n1", "n2", "n3"]}
_seq = {}


def _confirm(db, node, version, keys):
    """The node's agent after a healthy boot: OTA_UP confirmed with the keys it trusts now."""
    _seq[node] = _seq.get(node, 0) + 1
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.OTA_UP, _seq[node], {"state": 5, "version": version,
                                                      "keys": keys})
    ing = Ingest(db)
    ing.add(f"pl/v1/{node}/up", bytes(buf[:n]), 1_800_000_000.0 + _seq[node])
    assert ing.flush() == 1


def _release(db, settings, version, key_id=None) -> dict:
    path = ota.build(settings, version, ["ESP32_GENERIC"], key_id, compile_mpy=False)
    return ota.upload(db, settings, path.read_bytes(), actor="op")


def test_keys_rotate_across_a_fleet_without_stranding_a_node(db, settings, runner):
    ota.create_key(settings, "k1")
    for n in ("n1", "n2"):
        provision.register(db, settings, n, board="ESP32_GENERIC")
    ota.create_key(settings, "k2")
    provision.register(db, settings, "n3", board="ESP32_GENERIC")
    assert identity_store.trusted_key_ids(db, ["n1", "n2", "n3"]) == {
        "n1": ["k1"], "n2": ["k1"], "n3": ["k1", "k2"]}
    # Every release carries the fleet's keys of the day.
    m = _release(db, settings, "0.2.0")
    assert m["key"] == "k2" and m["keys"] == ota.trusted_keys(settings)
    # n1 and n2 do not trust k2 yet: the rollout is refused, and says what to do.
    with pytest.raises(rollouts.RolloutError) as e:
        rollouts.create(db, "0.2.0", TARGET)
    text = str(e.value)
    assert "signed with key k2, which 2 target node(s) do not trust (n1, n2; they trust k1)" \
        in text and "--key k1" in text
    # A rollout to n3 alone runs; adding n1 and n2 skips them, counted.
    rid = rollouts.create(db, "0.2.0", {"nodes": ["n3"]})
    done = rollouts.add_nodes(db, rid, ["n1", "n2"], actor="op")
    assert done["added"] == 0 and done["skipped"]["untrusted_key"] == 2
    rollouts.act(db, rid, "abort", actor="op")
    # Retiring k1 now would strand n1 and n2: refused, on the CLI too.
    with pytest.raises(ota.ReleaseError, match=r"2 node\(s\) trust no other key than k1"):
        ota.retire_key(settings, "k1", db)
    r = runner.invoke(cli, ["keys", "retire", "k1"])
    assert r.exit_code == 1 and "trust no other key than k1" in r.output, r.output
    assert "k1" in ota.trusted_keys(settings)
    # The way through: a release signed with k1 brings k2 along.
    m = _release(db, settings, "0.2.1", "k1")
    assert m["key"] == "k1" and set(m["keys"]) == {"k1", "k2"}
    rid = rollouts.create(db, "0.2.1", TARGET)
    for n in ("n1", "n2", "n3"):
        _confirm(db, n, "0.2.1", "k1,k2")
    assert identity_store.trusted_key_ids(db, ["n1", "n2", "n3"]) == {
        "n1": ["k1", "k2"], "n2": ["k1", "k2"], "n3": ["k1", "k2"]}
    rollouts.act(db, rid, "abort", actor="op")  # done with it (ticks are not what this tests)
    r = runner.invoke(cli, ["keys", "retire", "k1"])
    assert r.exit_code == 0 and "retired" in r.output, r.output
    # From now on releases are signed with k2 and carry {k2}; nodes that confirm drop k1.
    m = _release(db, settings, "0.3.0")
    assert m["key"] == "k2" and list(m["keys"]) == ["k2"]
    rollouts.create(db, "0.3.0", TARGET)
    _confirm(db, "n1", "0.3.0", "k2")
    assert identity_store.trusted_key_ids(db, ["n1"]) == {"n1": ["k2"]}
    assert ota_store.node_updates(db, "n1")["keys"] == ["k2"]


def test_retire_with_force_and_reflashing_gives_todays_keys(db, settings, runner):
    ota.create_key(settings, "k1")
    provision.register(db, settings, "n1", board="ESP32_GENERIC")
    _confirm(db, "n1", "0.1.0", "k1")
    ota.create_key(settings, "k2")
    # Reflashing n1 (a new image) gives it the fleet's keys of today, reported or not before.
    ident = provision.issue(db, settings, "n1", "ESP32_GENERIC", actor="tech")
    assert set(ident["ota"]["keys"]) == {"k1", "k2"}
    assert identity_store.trusted_key_ids(db, ["n1"]) == {"n1": ["k1", "k2"]}
    provision.register(db, settings, "n2", board="ESP32_GENERIC")
    with transaction(db) as conn:  # as if n2 was flashed when only k1 existed
        conn.execute("UPDATE node_credentials SET ota_keys = ? WHERE node_id = 'n2'",
                     (json.dumps({"k1": ota.trusted_keys(settings)["k1"]}),))
    r = runner.invoke(cli, ["keys", "retire", "k1"])
    assert r.exit_code == 1 and "(n2)" in r.output, r.output
    r = runner.invoke(cli, ["keys", "retire", "k1", "--force"])
    assert r.exit_code == 0, r.output
    assert list(ota.trusted_keys(settings)) == ["k2"]


def test_nodes_whose_keys_are_unknown_are_not_refused(db, settings):
    """A node enrolled by its first frame (not registered here) has no known key set."""
    ota.create_key(settings, "k1")
    _release(db, settings, "0.2.0")
    node_store.enrol_node(db, "loose", board="ESP32_GENERIC", provider="mqtt")
    assert identity_store.trusted_key_ids(db, ["loose"]) == {"loose": None}
    assert rollouts.create(db, "0.2.0", {"nodes": ["loose"]})


def _signed(settings, keys) -> tuple[bytes, str, dict]:
    files = [{"path": "polylink/a.py", "sha256": __import__("hashlib").sha256(b"x").hexdigest(),
              "size": 1}]
    manifest = ota.manifest_bytes("0.2.0", "k1", ["ESP32_GENERIC"], files, keys=keys)
    _kid, key = ota.signing_key(settings, "k1")
    return manifest, ota.sign(key, "k1", manifest), {files[0]["sha256"]: b"x"}


@pytest.mark.parametrize("keys, match", [
    ({}, "1..8 trusted keys"),
    ([], "1..8 trusted keys"),
    ("k1", "1..8 trusted keys"),
    ({"K1": "04" + "00" * 64}, "bad key id"),
    ({"k1": "04" + "AB" * 64}, "lowercase hex"),
    ({"k1": "03" + "ab" * 32}, "uncompressed P-256 point"),
    ({"k1": "04" + "00" * 64}, "not a point on P-256"),
])
def test_a_release_with_a_bad_key_set_is_refused(settings, keys, match):
    ota.create_key(settings, "k1")
    manifest, sig, blobs = _signed(settings, keys)
    with pytest.raises(ota.ReleaseError, match=match):
        ota.check_release(ota.trusted_keys(settings), manifest, sig, blobs)


def test_more_keys_than_a_node_holds_is_refused_at_build(settings):
    for i in range(ota.MAX_KEYS + 1):
        ota.create_key(settings, f"k{i}")
    with pytest.raises(ota.ReleaseError, match="retire old keys"):
        ota.build(settings, "0.2.0", ["ESP32_GENERIC"], compile_mpy=False)


def test_api_and_node_page_show_the_keys_a_node_trusts(db, settings, client, token, logged_in):
    ota.create_key(settings, "k1")
    provision.register(db, settings, "n1", board="ESP32_GENERIC")
    r = client.get("/api/v1/nodes/n1/ota", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.get_json()["trusted_keys"] == ["k1"]
    page = logged_in.get("/nodes/n1").get_data(as_text=True)
    assert "Trusts update keys: k1" in page
