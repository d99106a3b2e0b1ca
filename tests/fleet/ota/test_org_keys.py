"""Signing keys belong to an organisation (issue 18): an organisation makes, lists, signs with
and retires only its own keys; its releases and its nodes carry the platform's keys and its
own, never another organisation's; a release of one organisation is never offered to another's
nodes, also after a node moved. The CLI side of the isolation is walked in
tests/fleet/organisations/test_cli_isolation.py."""

import os
import stat

import pytest
from polylink import proto

from fleet.cli import cli
from fleet.identity import provision
from fleet.ingest import Ingest
from fleet.ota import releases as ota
from fleet.ota import rollouts
from fleet.store import identity as identity_store
from fleet.store import orgs
from fleet.store import ota as ota_store
from fleet.store.base import UnknownRelease
from fleet.store.scope import EVERYTHING, Scope, set_scope
from fleet.web import auth


@pytest.fixture
def two(db, settings):
    """The platform's key p1, parking's a1 and environment's b1, each made as its owner."""
    a = orgs.add_organisation(db, "parking")
    b = orgs.add_organisation(db, "environment")
    ota.create_key(settings, "p1")
    set_scope(db, Scope(a))
    ota.create_key(settings, "a1", db, actor="alice")
    set_scope(db, Scope(b))
    ota.create_key(settings, "b1", db, actor="bob")
    set_scope(db, EVERYTHING)
    return a, b


def _build(db, settings, version, key_id=None, for_org=None) -> dict:
    path = ota.build(settings, version, ["ESP32_GENERIC"], key_id, compile_mpy=False, db=db,
                     for_org=for_org)
    return ota.upload(db, settings, path.read_bytes(), actor="op", for_org=for_org)


def test_an_organisation_sees_and_retires_only_its_own_keys(db, settings, two):
    a, b = two
    pem = settings.data_dir / "ota" / "keys" / "a1.pem"
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    # The platform's key file stays the platform's alone; a1 and b1 are recorded with owners.
    assert list(ota.trusted_keys(settings)) == ["p1"]
    assert ota_store.key_org(db, "a1") == a and ota_store.key_org(db, "b1") == b
    set_scope(db, Scope(a))
    assert [(k["id"], k["platform"], k["can_sign"]) for k in ota.list_keys(settings, db)] == [
        ("a1", False, True), ("p1", True, False)]
    # Ids are unique across the platform, the platform's and other organisations' too.
    for taken in ("p1", "b1", "a1"):
        with pytest.raises(ota.ReleaseError, match=f"key {taken} already exists"):
            ota.create_key(settings, taken, db)
    with pytest.raises(ota.ReleaseError, match="p1 is the platform's: an organisation retires"):
        ota.retire_key(settings, "p1", db)
    # Another organisation's key is answered like one that never existed.
    with pytest.raises(ota.ReleaseError) as theirs:
        ota.retire_key(settings, "b1", db)
    with pytest.raises(ota.ReleaseError) as ghost:
        ota.retire_key(settings, "zz", db)
    assert str(theirs.value) == str(ghost.value).replace("zz", "b1")
    assert "no key b1 of this organisation" in str(theirs.value)
    assert (settings.data_dir / "ota" / "keys" / "b1.pem").exists()
    assert "p1" in ota.trusted_keys(settings) and ota_store.key_org(db, "b1") == b
    ota.retire_key(settings, "a1", db, actor="alice")
    assert not pem.exists() and ota_store.key_org(db, "a1") is None
    assert [k["id"] for k in ota.list_keys(settings, db)] == ["p1"]
    # The platform sees every organisation's keys, owner named, and signs only with its own.
    set_scope(db, EVERYTHING)
    assert [(k["id"], k["org"], k["can_sign"]) for k in ota.list_keys(settings, db)] == [
        ("b1", "environment", False), ("p1", None, True)]


def test_an_organisation_signs_only_with_its_own_keys(db, settings, two):
    a, b = two
    set_scope(db, Scope(a))
    with pytest.raises(ota.ReleaseError, match="key b1 is not one of this organisation's"):
        _build(db, settings, "0.2.0", "b1")
    with pytest.raises(ota.ReleaseError, match="key p1 is the platform's, which signs only"):
        _build(db, settings, "0.2.0", "p1")
    with pytest.raises(ota.ReleaseError, match="only the platform operator builds a release"):
        _build(db, settings, "0.2.0", for_org=b)
    m = _build(db, settings, "0.2.0")  # its newest own key by default
    assert m["key"] == "a1" and set(m["keys"]) == {"p1", "a1"}
    assert ota_store.get_release(db, "0.2.0")["org_id"] == a
    bundle = (ota.release_dir(settings) / "polylink-0.2.0.tar").read_bytes()
    # environment cannot store parking's release as its own, nor see parking's.
    set_scope(db, Scope(b))
    with pytest.raises(UnknownRelease):
        ota_store.get_release(db, "0.2.0")
    with pytest.raises(ota.ReleaseError, match="signed with key 'a1', which this fleet does not"):
        ota.upload(db, settings, bundle)
    # The platform signs with its own keys only, and its releases carry the platform's alone.
    set_scope(db, EVERYTHING)
    with pytest.raises(ota.ReleaseError, match="no private key for a1"):
        _build(db, settings, "0.3.0", "a1")
    m = _build(db, settings, "0.3.0")
    assert m["key"] == "p1" and list(m["keys"]) == ["p1"]


def test_a_bundle_carrying_another_organisation_s_key_is_refused(db, settings, two):
    a, _b = two
    set_scope(db, Scope(a))
    files = [{"path": "polylink/a.py", "sha256": __import__("hashlib").sha256(b"x").hexdigest(),
              "size": 1}]
    keys = {"p1": ota.trusted_keys(settings)["p1"], "b1": ota_store.org_keys_all(db)["b1"]}
    manifest = ota.manifest_bytes("0.2.0", "a1", ["ESP32_GENERIC"], files, keys=keys)
    kid, key = ota.signing_key(settings, "a1", db)
    bundle = settings.data_dir / "evil.tar"
    ota.write_bundle(bundle, manifest, ota.sign(key, kid, manifest), {files[0]["sha256"]: b"x"})
    with pytest.raises(ota.ReleaseError, match="b1 is another organisation's key"):
        ota.upload(db, settings, bundle.read_bytes())
    with pytest.raises(UnknownRelease):
        ota_store.get_release(db, "0.2.0")


def test_a_node_trusts_the_platform_s_keys_and_its_own_organisation_s(db, settings, two):
    a, b = two
    set_scope(db, Scope(a))
    ident = provision.register(db, settings, "pa", board="ESP32_GENERIC")
    assert set(ident["ota"]["keys"]) == {"p1", "a1"}
    set_scope(db, Scope(b))
    ident = provision.register(db, settings, "pb", board="ESP32_GENERIC")
    assert set(ident["ota"]["keys"]) == {"p1", "b1"}
    set_scope(db, EVERYTHING)
    ident = provision.register(db, settings, "pp", board="ESP32_GENERIC")
    assert set(ident["ota"]["keys"]) == {"p1"}
    assert identity_store.trusted_key_ids(db, ["pa", "pb", "pp"]) == {
        "pa": ["a1", "p1"], "pb": ["b1", "p1"], "pp": ["p1"]}
    # Reflashing environment's node as the platform still gives it environment's keys.
    ident = provision.issue(db, settings, "pb", "ESP32_GENERIC", actor="tech")
    assert set(ident["ota"]["keys"]) == {"p1", "b1"}
    # What environment's releases carry (what its nodes trust after one) has no key of parking.
    set_scope(db, Scope(b))
    assert set(_build(db, settings, "0.2.0")["keys"]) == {"p1", "b1"}


def test_a_release_of_one_organisation_never_goes_to_another_s_nodes(db, settings, two):
    a, b = two
    set_scope(db, Scope(a))
    provision.register(db, settings, "pa", board="ESP32_GENERIC")
    _build(db, settings, "0.2.0")
    set_scope(db, Scope(b))
    provision.register(db, settings, "pb", board="ESP32_GENERIC")
    with pytest.raises(UnknownRelease):  # environment cannot even name it
        rollouts.create(db, "0.2.0", {"nodes": ["pb"]})
    # The platform sees every node, but parking's release still goes to parking's nodes only.
    set_scope(db, EVERYTHING)
    with pytest.raises(rollouts.RolloutError, match=r"other organisation: .* 1 target node\(s\)"
                                                    r" are not its: pb"):
        rollouts.create(db, "0.2.0", {"nodes": ["pa", "pb"]})
    rid = rollouts.create(db, "0.2.0", {"nodes": ["pa"]})
    done = rollouts.add_nodes(db, rid, ["pb"], actor="op")
    assert done["added"] == 0 and done["skipped"]["other_org"] == 1
    assert "1 of another organisation than the release's" in rollouts.skipped_text(
        done["skipped"], "0.2.0")
    assert ota_store.rollout_offer_for(db, "pb") is None
    assert ota_store.node_release_versions(db, "pb") == set()


def _confirm(db, node, version, keys, seq):
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.OTA_UP, seq, {"state": 5, "version": version, "keys": keys})
    ing = Ingest(db)
    ing.add(f"pl/v1/{node}/up", bytes(buf[:n]), 1_800_000_000.0 + seq)
    assert ing.flush() == 1


def test_a_moved_node_leaves_the_old_organisation_s_rollouts_and_changes_keys_by_release(
        db, settings, two):
    a, b = two
    set_scope(db, Scope(a))
    provision.register(db, settings, "pa", board="ESP32_GENERIC")
    _build(db, settings, "0.2.0")
    rid = rollouts.create(db, "0.2.0", {"nodes": ["pa"]}, [{"percent": 100, "soak": 0}])
    assert ota_store.rollout_offer_for(db, "pa") == {"version": "0.2.0", "rid": rid}
    set_scope(db, EVERYTHING)
    orgs.move_node(db, "pa", "environment", actor="op")
    # parking's rollout offers it nothing more, and the node may no longer fetch the release.
    (row,) = ota_store.rollout_nodes(db, rid)
    assert (row["state"], row["reason"]) == ("skipped", "moved to another organisation")
    assert ota_store.rollout_offer_for(db, "pa") is None
    assert ota_store.node_release_versions(db, "pa") == set()
    # The node still trusts what it was flashed with (a1 too) until it confirms a release of
    # environment's; a release signed with b1 is refused for it, saying what it trusts.
    assert identity_store.trusted_key_ids(db, ["pa"]) == {"pa": ["a1", "p1"]}
    set_scope(db, Scope(b))
    _build(db, settings, "0.3.0")
    with pytest.raises(rollouts.RolloutError, match=r"signed with key b1, which 1 target.*"
                                                    r"they trust a1, p1"):
        rollouts.create(db, "0.3.0", {"nodes": ["pa"]})
    # The way: the platform signs environment's next release with its key; it carries
    # environment's keys, and once the node confirms it, a1 is gone and b1 trusted.
    set_scope(db, EVERYTHING)
    m = _build(db, settings, "0.4.0", "p1", for_org=b)
    assert m["key"] == "p1" and set(m["keys"]) == {"p1", "b1"}
    assert ota_store.get_release(db, "0.4.0")["org_id"] == b
    set_scope(db, Scope(b))
    rollouts.create(db, "0.4.0", {"nodes": ["pa"]})
    _confirm(db, "pa", "0.4.0", "b1,p1", 1)
    assert identity_store.trusted_key_ids(db, ["pa"]) == {"pa": ["b1", "p1"]}
    # Reflashing it gives environment's keys straight away.
    assert set(provision.trusted_ota_keys(settings, db, "pa")) == {"p1", "b1"}


def test_the_keys_commands_act_for_the_organisation(db, settings, runner, two):
    r = runner.invoke(cli, ["--org", "parking", "keys", "create", "a2"])
    assert r.exit_code == 0 and "key a2 created" in r.output, r.output
    r = runner.invoke(cli, ["--org", "parking", "keys", "list"])
    lines = {line.split()[0]: line.split()[1:3] for line in r.output.splitlines()}
    assert r.exit_code == 0 and lines == {"a1": ["signs", "parking"], "a2": ["signs", "parking"],
                                          "p1": ["verify-only", "(platform)"]}, r.output
    r = runner.invoke(cli, ["--org", "parking", "keys", "retire", "p1"])
    assert r.exit_code == 1 and "p1 is the platform's" in r.output, r.output
    r = runner.invoke(cli, ["--org", "parking", "keys", "retire", "b1"])
    assert r.exit_code == 1 and "no key b1 of this organisation" in r.output, r.output
    r = runner.invoke(cli, ["--org", "parking", "release", "build", "0.2.0", "--key", "b1",
                            "--no-upload"])
    assert r.exit_code == 1 and "b1 is not one of this organisation's" in r.output, r.output
    r = runner.invoke(cli, ["--org", "parking", "release", "build", "0.2.0", "--for-org",
                            "environment", "--no-upload"])
    assert r.exit_code == 1 and "only the platform operator" in r.output, r.output
    r = runner.invoke(cli, ["--org", "parking", "keys", "retire", "a2"])
    assert r.exit_code == 0 and "retired" in r.output, r.output
    # The platform's list names each key's owner.
    r = runner.invoke(cli, ["keys", "list"])
    lines = {line.split()[0]: line.split()[1:3] for line in r.output.splitlines()}
    assert lines == {"a1": ["verify-only", "parking"], "b1": ["verify-only", "environment"],
                     "p1": ["signs", "(platform)"]}, r.output


def test_the_updates_page_lists_the_organisation_s_keys_and_the_platform_s(
        db, settings, app, form_token, two):
    """The route walk (tests/fleet/organisations/test_isolation.py) compares statuses, but reads
    no streamed body, and every page here is streamed: so this page is checked here."""
    a, _b = two
    set_scope(db, Scope(a))
    auth.create_user(db, "alice", "correct horse", "admin")
    set_scope(db, EVERYTHING)
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "alice", "password": "correct horse",
                                         "csrf_token": form_token(client, "/auth/login")})
    assert r.status_code == 302
    page = client.get("/updates/").get_data(as_text=True)
    line = next(x for x in page.splitlines() if "Trusted signing keys" in x)
    assert "<code>a1</code> (parking)" in line and "<code>p1</code> (platform) (verify only)" \
        in line and "b1" not in line and "environment" not in line, line
