"""Rollback protection on the fleet side: a release signed as a downgrade (`--downgrade-from`),
rollouts of an older release refused before any offer, and the node's refusal shown as the rollout
node's reason. The node's side is in tests/firmware/ota/test_ota_rollback.py (also under wasm)."""

import json
import time

import pytest
from polylink import codes, proto
from rollout_nodes import STAGES, Nodes  # tests/fleet/ is on sys.path

from fleet.cli import cli
from fleet.ota import releases as ota
from fleet.ota import rollouts
from fleet.store import ota as ota_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import transaction


def _release(db, version, downgrade_from=None):
    m = {"version": version, "key": "k1", "boards": ["ESP32_GENERIC"], "micropython": "1.22.0",
         "files": [{"path": "polylink/node.mpy", "sha256": "0" * 64, "size": 1}]}
    if downgrade_from:
        m["downgrade_from"] = downgrade_from
    ota_store.add_release(db, m, "0" * 64)


def _runs(db, version, ids):
    with transaction(db) as conn:
        conn.executemany("UPDATE nodes SET firmware_version = ? WHERE id = ?",
                         [(version, i) for i in ids])


def test_build_signs_downgrade_from_into_the_manifest_and_upload_keeps_it(settings, db):
    ota.create_key(settings, "k1")
    path = ota.build(settings, "0.2.1", compile_mpy=False, downgrade_from="0.3.0")
    manifest, sig, blobs = ota.read_bundle(path.read_bytes())
    assert json.loads(manifest)["downgrade_from"] == "0.3.0", "inside the signed bytes"
    ota.upload(db, settings, path.read_bytes())
    assert ota_store.get_release(db, "0.2.1")["downgrade_from"] == "0.3.0"
    plain = ota.build(settings, "0.2.2", compile_mpy=False)
    assert "downgrade_from" not in json.loads(ota.read_bundle(plain.read_bytes())[0])
    for bad, match in (("0.2.1", "not older"), ("0.1.0", "not older"), ("x", "MAJOR.MINOR")):
        with pytest.raises(ota.ReleaseError, match=match):
            ota.build(settings, "0.2.1", compile_mpy=False, downgrade_from=bad)


def test_upload_refuses_a_signed_downgrade_from_an_older_version(settings):
    ota.create_key(settings, "k1")
    manifest, _sig, blobs = ota.read_bundle(
        ota.build(settings, "0.2.0", compile_mpy=False).read_bytes())
    m = json.loads(manifest)
    m["downgrade_from"] = "0.1.0"
    raw = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    kid, key = ota.signing_key(settings, "k1")
    with pytest.raises(ota.ReleaseError, match="downgrade from 0.1.0: 0.2.0 is not older"):
        ota.check_release(ota.trusted_keys(settings), raw, ota.sign(key, kid, raw), blobs)


def test_cli_release_build_downgrade_from(runner, settings, db):
    assert runner.invoke(cli, ["keys", "create", "k1"]).exit_code == 0
    r = runner.invoke(cli, ["release", "build", "0.2.1", "--downgrade-from", "0.3.0"])
    assert r.exit_code == 0, r.output
    assert "a downgrade for nodes on 0.3.0" in r.output
    r = runner.invoke(cli, ["release", "build", "0.4.0", "--downgrade-from", "0.3.0"])
    assert r.exit_code != 0 and "0.4.0 is not older than it" in r.output
    assert "Traceback" not in r.output


def test_rollout_of_an_older_release_is_refused_unless_a_downgrade_from_what_they_run(db):
    ids = ["n1", "n2", "n3"]
    Nodes(db, ids)
    _runs(db, "0.3.0", ["n1", "n2"])  # n3 is on 0.1.0
    _release(db, "0.2.0")
    with pytest.raises(rollouts.RolloutError) as e:
        rollouts.create(db, "0.2.0", {"nodes": ids})
    text = str(e.value)
    assert text.startswith("older release: 2 target node(s) run a newer version than 0.2.0 "
                           "(n1, n2: 0.3.0)"), text
    assert "--downgrade-from 0.3.0" in text
    assert rollouts.create(db, "0.2.0", {"nodes": ["n3"]}), "an upgrade for n3"
    _release(db, "0.2.1", downgrade_from="0.3.0")
    _runs(db, "0.2.5", ["n3"])
    with pytest.raises(rollouts.RolloutError, match=r"\(n3: 0.2.5\).*a downgrade from 0.3.0 only"):
        rollouts.create(db, "0.2.1", {"nodes": ["n3"]})
    assert rollouts.create(db, "0.2.1", {"nodes": ["n1", "n2"]}), "the signed downgrade"


def test_adding_nodes_on_a_newer_version_skips_them_counted(db):
    Nodes(db, ["n1", "n2", "n3"])
    _runs(db, "0.3.0", ["n2"])
    _runs(db, "0.2.5", ["n3"])
    _release(db, "0.2.1", downgrade_from="0.3.0")
    rid = rollouts.create(db, "0.2.1", {"nodes": ["n1"]}, STAGES)
    done = rollouts.add_nodes(db, rid, ["n2", "n3"])
    assert done["added"] == 1 and done["skipped"]["newer_version"] == 1, done
    assert rollouts.skipped_text(done["skipped"], "0.2.1") == "1 on a newer version than 0.2.1"
    assert {n["node_id"] for n in ota_store.rollout_nodes(db, rid)} == {"n1", "n2"}


def test_a_node_refusing_an_older_release_shows_why_on_the_rollout(db):
    # A node whose version the fleet had not heard yet refuses the offer itself.
    Nodes(db, ["n1"])
    _release(db, "0.2.0")
    rid = rollouts.create(db, "0.2.0", {"nodes": ["n1"]}, STAGES)
    sent = []
    rollouts.tick(db, lambda node, frame: sent.append(proto.decode(frame)[3]), "http://fleet")
    assert sent and sent[0]["version"] == "0.2.0"
    b = telemetry_store.Batch()
    b.frames = [("n1", 9, proto.OTA_UP, time.time(), None, "mqtt",
                 {"state": codes.FAILED, "version": "0.2.0", "rid": rid,
                  "reason": codes.OLDER_RELEASE, "text": "0.2.0 is older than 0.3.0"})]
    telemetry_store.store_batch(db, b, proto.TELEMETRY, proto.STATUS, proto.EVENT,
                                proto.RESULT, proto.OTA_UP)
    rollouts.tick(db, lambda node, frame: None, "http://fleet")
    n = ota_store.rollout_nodes(db, rid)[0]
    assert n["state"] == "failed"
    assert "older than the node's version" in n["reason"], n["reason"]
