"""Rollouts over many simulated nodes: stages, confirmed boots only, auto-pause, operator actions.

The nodes here are protocol-level simulations: each decodes the real OTA_DOWN offer with the codec
and answers with the OTA_UP and STATUS frames the firmware agent sends (polylink/ota/agent.py),
stored through the ingest's batch writer. The real agent over real HTTP and MQTT is in
tests/e2e/test_ota_end_to_end.py.
"""

import re
import time

import pytest
from polylink import proto
from rollout_nodes import STAGES, Nodes, _release  # tests/fleet/ is on sys.path

from fleet.ota import releases as ota
from fleet.ota import rollouts
from fleet.store import audit as audit_store
from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import UnknownRelease, transaction


def _run(db, nodes, rid, ticks=20):
    for _ in range(ticks):
        rollouts.tick(db, nodes.send, "http://fleet")
        nodes.deliver()
        if ota_store.get_rollout(db, rid)["state"] != "running":
            break
    rollouts.tick(db, nodes.send, "http://fleet")
    return ota_store.get_rollout(db, rid)


IDS = [f"n-{i:03d}" for i in range(200)]


def test_bad_release_pauses_at_the_first_stage_and_no_one_else_gets_it(db):
    _release(db, "0.3.0")
    nodes = Nodes(db, IDS, bad={"0.3.0"})
    rid = rollouts.create(db, "0.3.0", {"board": "ESP32_GENERIC"}, STAGES, 0.2)
    r = _run(db, nodes, rid)
    assert r["state"] == "paused" and r["stage"] == 0
    assert "crash loop" in r["reason"], r["reason"]
    assert len(nodes.offers) == 2, "stage 1 (1 % of 200, at least one node) only"
    s = rollouts.summary(db, rid)
    assert s["stage_counts"][0] == {"rolled_back": 2}
    assert s["totals"]["pending"] == 198
    # The fleet's view matches what the nodes run: the rolled-back nodes are on 0.1.0.
    for n in ota_store.rollout_nodes(db, rid, state="rolled_back"):
        assert n["firmware_version"] == "0.1.0"
    # Paused stays paused: more ticks offer nothing.
    _run(db, nodes, rid, ticks=3)
    assert len(nodes.offers) == 2


def test_good_release_reaches_every_node_confirmed(db):
    _release(db, "0.2.0")
    nodes = Nodes(db, IDS)
    rid = rollouts.create(db, "0.2.0", {"board": "ESP32_GENERIC"}, STAGES)
    r = _run(db, nodes, rid, ticks=50)
    assert r["state"] == "done", r
    s = rollouts.summary(db, rid)
    assert s["totals"] == {"succeeded": 200}
    assert all(n["firmware_version"] == "0.2.0" for n in ota_store.rollout_nodes(db, rid))
    assert all(v == 1 for v in nodes.offers.values()) and len(nodes.offers) == 200
    actions = [a["action"] for a in audit_store.audit_log(db, target=f"rollout:{rid}")]
    assert actions.count("rollout.stage") == 3 and actions[0] == "rollout.done"


def test_confirmed_counts_only_when_the_node_runs_the_release(db):
    _release(db, "0.2.0")
    nodes = Nodes(db, IDS[:3])
    rid = rollouts.create(db, "0.2.0", {"nodes": IDS[:3]}, [{"percent": 100, "soak": 0}])
    rollouts.tick(db, lambda n, f: None, None)
    # A node says "confirmed" but its STATUS still reports the old version: not a success.
    b = telemetry_store.Batch()
    b.frames = [(IDS[0], 1, proto.OTA_UP, time.time(), None, "mqtt",
                 {"state": 5, "version": "0.2.0", "rid": rid})]
    telemetry_store.store_batch(db, b, 0, 1, 2, 3, proto.OTA_UP)
    rollouts.tick(db, lambda n, f: None, None)
    states = {n["node_id"]: n["state"] for n in ota_store.rollout_nodes(db, rid)}
    assert states[IDS[0]] == "confirmed"
    del nodes


def test_runtime_release_counts_a_node_only_once_its_status_shows_the_new_micropython(db):
    _release(db, "0.3.0", runtime="1.25.0")
    nodes = Nodes(db, IDS[:5], runtimes={"0.3.0": "1.25.0"}, stale={"n-002"})
    rid = rollouts.create(db, "0.3.0", {"nodes": IDS[:5]}, [{"percent": 100, "soak": 0}])
    r = _run(db, nodes, rid, ticks=5)
    assert r["state"] == "running", "n-002 confirmed on the old MicroPython: not done"
    got = {n["node_id"]: n for n in ota_store.rollout_nodes(db, rid)}
    stuck = got.pop("n-002")
    assert all(n["state"] == "succeeded" and n["micropython_version"] == "1.25.0"
               for n in got.values())
    # New app, old MicroPython: confirmed, not counted, and the reason says why.
    assert (stuck["state"], stuck["firmware_version"], stuck["micropython_version"]) == (
        "confirmed", "0.3.0", "1.24.1")
    assert stuck["reason"] == ("confirmed, but its STATUS says MicroPython 1.24.1, not the "
                               "release's 1.25.0"), stuck["reason"]
    assert rollouts.summary(db, rid)["totals"] == {"succeeded": 4, "confirmed": 1}
    # Its next boot STATUS names the runtime: only now it counts.
    nodes._up("n-002", proto.STATUS, {"fw": "0.3.0", "uptime": 4, "micropython": "1.25.0"})
    nodes.deliver()
    rollouts.tick(db, nodes.send, None)
    assert ota_store.get_rollout(db, rid)["state"] == "done"
    assert rollouts.summary(db, rid)["totals"] == {"succeeded": 5}


def test_runtime_release_waits_for_a_node_that_never_named_its_micropython(db):
    _release(db, "0.3.0", runtime="1.25.0")
    Nodes(db, IDS[:1])
    rid = rollouts.create(db, "0.3.0", {"nodes": IDS[:1]}, [{"percent": 100, "soak": 0}])
    rollouts.tick(db, lambda n, f: None, None)
    b = telemetry_store.Batch()
    b.frames = [(IDS[0], 1, proto.STATUS, time.time(), None, "mqtt", {"fw": "0.3.0", "uptime": 9}),
                (IDS[0], 2, proto.OTA_UP, time.time(), None, "mqtt",
                 {"state": 5, "version": "0.3.0", "rid": rid})]
    telemetry_store.store_batch(db, b, 0, 1, 2, 3, proto.OTA_UP)
    rollouts.tick(db, lambda n, f: None, None)
    n = ota_store.rollout_nodes(db, rid)[0]
    assert n["state"] == "confirmed" and "has not said which MicroPython" in n["reason"]


def test_runtime_release_skips_only_nodes_on_both_its_app_and_its_micropython(db):
    _release(db, "0.3.0", runtime="1.25.0")
    _release(db, "0.2.0")
    Nodes(db, IDS[:6])
    with transaction(db) as conn:
        conn.executemany("UPDATE nodes SET firmware_version = ?, micropython_version = ?"
                         " WHERE id = ?",
                         [("0.3.0", "1.25.0", "n-000"), ("0.3.0", "1.24.1", "n-001"),
                          ("0.3.0", None, "n-002"), ("0.1.0", "1.25.0", "n-003"),
                          ("0.2.0", "1.24.1", "n-004"), ("0.3.0", "1.25.0", "n-005")])
    rid = rollouts.create(db, "0.3.0", {"nodes": IDS[:5]}, [{"percent": 100, "soak": 0}])
    states = {n["node_id"]: n["state"] for n in ota_store.rollout_nodes(db, rid)}
    assert states == {"n-000": "skipped", "n-001": "pending", "n-002": "pending",
                      "n-003": "pending", "n-004": "pending"}
    done = rollouts.add_nodes(db, rid, ["n-005"])
    assert done == {"added": 0, "skipped": {"already_in": 0, "on_version": 1,
                                            "other_rollout": 0, "incompatible": 0,
                                            "untrusted_key": 0, "newer_version": 0,
                                            "other_org": 0}}
    rollouts.act(db, rid, "abort", actor="op")
    # A release without a runtime image skips by app version alone, whatever MicroPython runs.
    rid = rollouts.create(db, "0.2.0", {"nodes": ["n-004"]}, [{"percent": 100, "soak": 0}])
    assert rollouts.summary(db, rid)["skipped"] == 1


def test_target_by_micropython_version(db):
    _release(db, "0.3.0", runtime="1.25.0")
    Nodes(db, IDS[:4])
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET micropython_version = '1.23.0' WHERE id IN"
                     " ('n-001', 'n-003')")
    rid = rollouts.create(db, "0.3.0", {"micropython": "1.23.0"}, [{"percent": 100, "soak": 0}])
    assert sorted(n["node_id"] for n in ota_store.rollout_nodes(db, rid)) == ["n-001", "n-003"]
    with pytest.raises(rollouts.RolloutError, match="matches no node"):
        rollouts.create(db, "0.3.0", {"micropython": "1.22.0"})


def test_cli_rollout_by_micropython_and_show_names_it(runner, db):
    from fleet.cli import cli

    _release(db, "0.3.0", runtime="1.25.0")
    Nodes(db, IDS[:3])
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET micropython_version = '1.23.0' WHERE id = 'n-001'")
    r = runner.invoke(cli, ["rollout", "create", "0.3.0", "--from-micropython", "1.23.0",
                            "--stages", "100:0"])
    assert r.exit_code == 0 and "to 1 nodes" in r.output, r.output
    rid = ota_store.list_rollouts(db)[0]["id"]
    out = runner.invoke(cli, ["rollout", "show", str(rid)]).output
    assert re.search(r"n-001\s+stage 1\s+pending\s+0.1.0\s+1.23.0", out), out


def test_skips_nodes_on_target_and_offers_offline_nodes_when_they_return(db):
    _release(db, "0.2.0")
    nodes = Nodes(db, IDS[:10], offline={"n-003"})
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET firmware_version = '0.2.0' WHERE id = 'n-005'")
    rid = rollouts.create(db, "0.2.0", {"nodes": IDS[:10]}, [{"percent": 100, "soak": 0}])
    s = rollouts.summary(db, rid)
    assert s["skipped"] == 1
    r = _run(db, nodes, rid, ticks=3)
    assert r["state"] == "running", "n-003 is still owed its update"
    assert "n-003" not in nodes.offers and "n-005" not in nodes.offers
    nodes.come_online("n-003")
    r = _run(db, nodes, rid, ticks=3)
    assert r["state"] == "done" and nodes.offers["n-003"] == 1


def test_health_regression_pauses(db):
    _release(db, "0.2.0")
    nodes = Nodes(db, IDS[:40])
    rid = rollouts.create(db, "0.2.0", {"nodes": IDS[:40]},
                          [{"percent": 25, "soak": 3600}, {"percent": 100, "soak": 0}], 0.5, 0.25)
    _run(db, nodes, rid, ticks=2)
    assert ota_store.get_rollout(db, rid)["state"] == "running"  # soaking
    # The updated nodes start dropping off the network, the others are fine.
    updated = [n["node_id"] for n in ota_store.rollout_nodes(db, rid, state="succeeded")]
    assert len(updated) == 10
    with transaction(db) as conn:
        conn.executemany("UPDATE nodes SET online = 0 WHERE id = ?", [(n,) for n in updated[:5]])
    rollouts.tick(db, nodes.send, None)
    r = ota_store.get_rollout(db, rid)
    assert r["state"] == "paused" and r["reason"].startswith("health regression"), r["reason"]


def test_operator_actions_pause_resume_retry_abort(db):
    _release(db, "0.3.0")
    nodes = Nodes(db, IDS[:20], bad={"0.3.0"})
    rid = rollouts.create(db, "0.3.0", {"nodes": IDS[:20]}, STAGES, 0.2)
    r = _run(db, nodes, rid)
    assert r["state"] == "paused"
    first = dict(nodes.offers)
    nodes.bad.clear()  # say the fault was in the environment: retry only the failed nodes
    r = rollouts.act(db, rid, "retry", actor="op")
    assert r["state"] == "running"
    r = _run(db, nodes, rid, ticks=1)
    assert set(nodes.offers) == set(first) and all(v == 2 for v in nodes.offers.values())
    rollouts.act(db, rid, "pause", actor="op")
    with pytest.raises(rollouts.RolloutError, match="only a running one"):
        rollouts.act(db, rid, "pause", actor="op")
    rollouts.act(db, rid, "resume", actor="op")
    rollouts.act(db, rid, "abort", actor="op")
    with pytest.raises(rollouts.RolloutError, match="already aborted"):
        rollouts.act(db, rid, "abort", actor="op")
    who = [(a["actor"], a["action"]) for a in audit_store.audit_log(db, target=f"rollout:{rid}")]
    assert ("op", "rollout.retry") in who and ("op", "rollout.abort") in who


def test_create_refuses_incompatible_boards_empty_targets_and_bad_stages(db):
    _release(db, "0.2.0")
    Nodes(db, IDS[:3])
    node_store.enrol_node(db, "heltec-1", board="HELTEC_V3")
    with pytest.raises(rollouts.RolloutError, match="incompatible board"):
        rollouts.create(db, "0.2.0", {"nodes": ["n-000", "heltec-1"]})
    with pytest.raises(rollouts.RolloutError, match="choose the target"):
        rollouts.create(db, "0.2.0", {})
    with pytest.raises(rollouts.RolloutError, match="matches no node"):
        rollouts.create(db, "0.2.0", {"tags": ["nowhere"]})
    with pytest.raises(rollouts.RolloutError, match="last stage"):
        rollouts.create(db, "0.2.0", {"nodes": ["n-000"]}, [{"percent": 50, "soak": 0}])
    with pytest.raises(UnknownRelease):
        rollouts.create(db, "9.9.9", {"nodes": ["n-000"]})
    rollouts.create(db, "0.2.0", {"nodes": ["n-000"]})
    with pytest.raises(rollouts.RolloutError, match="another unfinished rollout"):
        rollouts.create(db, "0.2.0", {"nodes": ["n-000", "n-001"]})


def test_api_and_ui(client, db, auth_headers, user, form_token):
    _release(db, "0.2.0")
    Nodes(db, IDS[:10])
    r = client.post("/api/v1/rollouts", headers=auth_headers,
                    json={"release": "0.2.0", "target": {"tags": ["pilot"]},
                          "stages": [{"percent": 100, "soak": 60}]})
    assert r.status_code == 201, r.json
    rid = r.json["id"]
    assert r.json["totals"] == {"pending": 1}  # n-007 carries the tag
    r = client.get(f"/api/v1/rollouts/{rid}", headers=auth_headers)
    assert r.json["nodes"][0]["node_id"] == "n-007"
    assert r.json["nodes"][0]["micropython_version"] is None
    _release(db, "0.3.0", runtime="1.25.0")
    rels = {x["version"]: x for x in client.get("/api/v1/releases",
                                                headers=auth_headers).json["releases"]}
    assert (rels["0.3.0"]["runtime_micropython"], rels["0.2.0"]["runtime_micropython"]) == (
        "1.25.0", None)
    r = client.post(f"/api/v1/rollouts/{rid}/pause", headers=auth_headers)
    assert r.json["state"] == "paused"
    r = client.post(f"/api/v1/rollouts/{rid}/explode", headers=auth_headers)
    assert r.status_code == 400 and "unknown action" in r.json["error"]
    r = client.post("/api/v1/rollouts", headers=auth_headers,
                    json={"release": "0.2.0", "target": {"nodes": ["ghost"]}})
    assert r.status_code == 400 and "unknown node" in r.json["error"]
    assert client.get("/api/v1/rollouts/999", headers=auth_headers).status_code == 404
    # UI: log in, see the pages, act through CSRF-protected forms.
    page = client.get("/auth/login")
    client.post("/auth/login", data={"username": user[0], "password": user[1],
                                     "csrf_token": form_token(client, "/auth/login")})
    html = client.get("/updates/").get_data(as_text=True)
    assert "0.2.0" in html and f'/updates/rollouts/{rid}"' in html and page.status_code == 200
    assert ">MicroPython 1.25.0</td>" in html and 'name="micropython"' in html
    html = client.get(f"/updates/rollouts/{rid}").get_data(as_text=True)
    assert "paused" in html and "n-007" in html
    assert client.post(f"/updates/rollouts/{rid}/resume").status_code == 400, "CSRF required"
    tok = form_token(client, f"/updates/rollouts/{rid}")
    r = client.post(f"/updates/rollouts/{rid}/resume", data={"csrf_token": tok})
    assert r.status_code == 302 and ota_store.get_rollout(db, rid)["state"] == "running"
    r = client.post("/updates/rollouts", data={"csrf_token": tok, "release": "0.2.0",
                                               "board": "HELTEC_V3"})
    assert r.status_code == 400 and "matches no node" in r.get_data(as_text=True)
    r = client.post("/updates/rollouts", data={"csrf_token": tok, "release": "0.2.0",
                                               "micropython": "1.19.1"})
    assert r.status_code == 400 and "matches no node" in r.get_data(as_text=True)


def test_ui_upload_refuses_with_a_message(client, settings, user, form_token):
    ota.create_key(settings, "k1")
    client.post("/auth/login", data={"username": user[0], "password": user[1],
                                     "csrf_token": form_token(client, "/auth/login")})
    tok = form_token(client, "/updates/")
    import io

    r = client.post("/updates/releases", data={"csrf_token": tok,
                                               "bundle": (io.BytesIO(b"junk"), "x.tar")},
                    content_type="multipart/form-data", follow_redirects=True)
    assert "Release refused: not a release bundle" in r.get_data(as_text=True)


def test_a_node_silent_mid_update_gets_the_offer_again(db):
    _release(db, "0.2.0")
    Nodes(db, IDS[:1])
    rid = rollouts.create(db, "0.2.0", {"nodes": IDS[:1]}, [{"percent": 100, "soak": 0}])
    sent = []
    rollouts.tick(db, lambda n, f: sent.append(n), None)
    b = telemetry_store.Batch()  # it starts downloading, then loses power and forgets the offer
    b.frames = [(IDS[0], 1, proto.OTA_UP, time.time(), None, "mqtt",
                 {"state": 2, "version": "0.2.0", "rid": rid, "progress": 25})]
    telemetry_store.store_batch(db, b, 0, 1, 2, 3, proto.OTA_UP)
    rollouts.tick(db, lambda n, f: sent.append(n), None)
    assert sent == [IDS[0]], "no second offer while the node is fresh"
    later = time.time() + rollouts.REOFFER_AFTER + 1
    rollouts.tick(db, lambda n, f: sent.append(n), None, now=later)
    assert sent == [IDS[0], IDS[0]]
    assert ota_store.rollout_nodes(db, rid)[0]["attempts"] == 2


def test_a_node_stuck_rebooting_or_confirmed_without_proof_fails_after_a_while(db):
    """Its stage must end (or pause) instead of waiting for it forever."""
    _release(db, "0.2.0")
    Nodes(db, IDS[:3])
    rid = rollouts.create(db, "0.2.0", {"nodes": IDS[:3]}, [{"percent": 100, "soak": 0}], 0.5)
    rollouts.tick(db, lambda n, f: None, None)
    b = telemetry_store.Batch()
    b.frames = [  # n-000 rebooted and was never heard again; n-001 confirmed, STATUS says 0.1.0
        (IDS[0], 1, proto.OTA_UP, time.time(), None, "mqtt",
         {"state": 4, "version": "0.2.0", "rid": rid}),
        (IDS[1], 1, proto.OTA_UP, time.time(), None, "mqtt",
         {"state": 5, "version": "0.2.0", "rid": rid}),
        (IDS[2], 1, proto.STATUS, time.time(), None, "mqtt", {"fw": "0.2.0", "uptime": 5}),
        (IDS[2], 2, proto.OTA_UP, time.time(), None, "mqtt",
         {"state": 5, "version": "0.2.0", "rid": rid})]
    telemetry_store.store_batch(db, b, 0, 1, 2, 3, proto.OTA_UP)
    rollouts.tick(db, lambda n, f: None, None)
    soon = time.time() + rollouts.STUCK_AFTER - 60
    rollouts.tick(db, lambda n, f: None, None, now=soon)
    got = {n["node_id"]: n for n in ota_store.rollout_nodes(db, rid)}
    assert [got[i]["state"] for i in IDS[:3]] == ["rebooting", "confirmed", "succeeded"]
    later = time.time() + rollouts.STUCK_AFTER + 1
    rollouts.tick(db, lambda n, f: None, None, now=later)
    got = {n["node_id"]: n for n in ota_store.rollout_nodes(db, rid)}
    assert [got[i]["state"] for i in IDS[:3]] == ["failed", "failed", "succeeded"]
    assert got[IDS[0]]["reason"] == "said it reboots into 0.2.0, then no confirmed boot for 60 min"
    assert got[IDS[1]]["reason"] == "confirmed, but its STATUS never showed 0.2.0 (for 60 min)"
    # 2 of 3 failed, over the 50 % threshold: paused, and retry offers them the release again.
    r = ota_store.get_rollout(db, rid)
    assert r["state"] == "paused" and "2 of 3 nodes failed" in r["reason"]


def test_abort_tells_nodes_mid_update_to_stop(db):
    _release(db, "0.2.0")
    Nodes(db, IDS[:2])
    rid = rollouts.create(db, "0.2.0", {"nodes": IDS[:2]}, [{"percent": 100, "soak": 0}])
    rollouts.tick(db, lambda n, f: None, None)  # both offered, neither answers yet
    rollouts.act(db, rid, "abort", actor="op")
    sent = []
    rollouts.tick(db, lambda n, f: sent.append((n, proto.decode(f)[3])), None)
    assert sorted(n for n, _ in sent) == IDS[:2]
    assert all(body["op"] == 2 and body["version"] == "0.2.0" for _, body in sent)
    assert {n["state"] for n in ota_store.rollout_nodes(db, rid)} == {"cancelled"}
    rollouts.tick(db, lambda n, f: sent.append(n), None)
    assert len(sent) == 2, "a cancel is sent once"


# --- adding nodes to an unfinished rollout -------------------------------------------------------


def test_add_nodes_joins_the_current_stage_and_skips_with_counts(db):
    _release(db, "0.2.0")
    nodes = Nodes(db, IDS[:8])
    with transaction(db) as conn:
        conn.execute("UPDATE nodes SET firmware_version = '0.2.0' WHERE id = 'n-005'")
        conn.execute("UPDATE nodes SET board = 'HELTEC_V3' WHERE id = 'n-006'")
    rid = rollouts.create(db, "0.2.0", {"nodes": IDS[:2]}, [{"percent": 50, "soak": 0},
                                                             {"percent": 100, "soak": 0}])
    other = rollouts.create(db, "0.2.0", {"nodes": ["n-004"]}, [{"percent": 100, "soak": 0}])
    done = rollouts.add_nodes(db, rid, IDS[:8] + ["n-002"], actor="alice")
    assert done == {"added": 3, "skipped": {"already_in": 2, "on_version": 1,
                                            "other_rollout": 1, "incompatible": 1,
                                            "untrusted_key": 0, "newer_version": 0,
                                            "other_org": 0}}
    assert rollouts.skipped_text(done["skipped"], "0.2.0") == (
        "2 already in it, 1 already on 0.2.0, 1 in another unfinished rollout, "
        "1 on a board 0.2.0 does not support")
    added = {n["node_id"]: n for n in ota_store.rollout_nodes(db, rid)}
    assert {"n-002", "n-003", "n-007"} <= set(added) and added["n-002"]["stage"] == 0
    assert added["n-002"]["state"] == "pending" and added["n-002"]["from_version"] == "0.1.0"
    entry = audit_store.audit_log(db, actor="alice")[0]
    assert entry["action"] == "rollout.add-nodes" and entry["target"] == f"rollout:{rid}"
    assert '"added": 3' in entry["detail"]
    # The next ticks offer the release to the added nodes, and the rollout completes with them.
    assert _run(db, nodes, rid)["state"] == "done"
    assert {n: nodes.offers.get(n) for n in ("n-002", "n-003", "n-007")} == {
        "n-002": 1, "n-003": 1, "n-007": 1}
    assert ota_store.get_rollout(db, other)["state"] == "done"
    # Only unfinished rollouts take nodes; unknown ids are an error, nothing is added.
    with pytest.raises(rollouts.RolloutError, match="rollout 1 is done; nodes can be added only"):
        rollouts.add_nodes(db, rid, ["n-001"])
    _release(db, "0.3.0")
    fresh = rollouts.create(db, "0.3.0", {"nodes": ["n-000"]}, [{"percent": 100, "soak": 0}])
    with pytest.raises(rollouts.RolloutError, match="unknown node"):
        rollouts.add_nodes(db, fresh, ["ghost", "n-003"])
    with pytest.raises(rollouts.RolloutError, match="non-empty list"):
        rollouts.add_nodes(db, fresh, [])
    assert len(ota_store.rollout_nodes(db, fresh)) == 1


def test_add_nodes_to_a_paused_rollout_waits_for_resume(db):
    _release(db, "0.2.0")
    nodes = Nodes(db, IDS[:3])
    rid = rollouts.create(db, "0.2.0", {"nodes": ["n-000"]}, [{"percent": 100, "soak": 0}])
    rollouts.act(db, rid, "pause", actor="alice")
    assert rollouts.add_nodes(db, rid, ["n-001"])["added"] == 1
    rollouts.tick(db, nodes.send, "http://fleet")
    assert nodes.offers == {}
    rollouts.act(db, rid, "resume", actor="alice")
    assert _run(db, nodes, rid)["state"] == "done" and set(nodes.offers) == {"n-000", "n-001"}


def test_add_nodes_api(client, db, auth_headers):
    from fleet.web.auth import create_token

    _release(db, "0.2.0")
    Nodes(db, IDS[:4])
    rid = rollouts.create(db, "0.2.0", {"nodes": ["n-000"]}, [{"percent": 100, "soak": 600}])
    url = f"/api/v1/rollouts/{rid}/nodes"
    r = client.post(url, headers=auth_headers, json={"nodes": ["n-000", "n-001", "n-002"]})
    assert r.status_code == 200, r.json
    assert r.json["added"] == 2 and r.json["skipped"]["already_in"] == 1
    assert r.json["rollout"]["totals"] == {"pending": 3}
    assert audit_store.audit_log(db, actor="token:tests")[0]["action"] == "rollout.add-nodes"
    tech = {"Authorization": "Bearer " + create_token(db, "tech", role="technician")}
    r = client.post(url, headers=tech, json={"nodes": ["n-003"]})
    assert r.status_code == 403
    for body in ({"nodes": "n-003"}, {"nodes": []}, {"ids": ["n-003"]}, ["n-003"]):
        r = client.post(url, headers=auth_headers, json=body)
        assert r.status_code == 400 and "error" in r.json, body
    r = client.post(url, headers=auth_headers, json={"nodes": ["ghost"]})
    assert r.status_code == 400 and "unknown node" in r.json["error"]
    assert client.post("/api/v1/rollouts/999/nodes", headers=auth_headers,
                       json={"nodes": ["n-003"]}).status_code == 404
    # The CLI does the same.
    from click.testing import CliRunner

    from fleet.cli import cli

    out = CliRunner().invoke(cli, ["rollout", "add", str(rid), "n-001", "n-003"])
    assert out.exit_code == 0, out.output
    assert f"rollout {rid}: 1 of 2 nodes added; skipped 1 already in it" in out.output
    rollouts.act(db, rid, "abort")
    out = CliRunner().invoke(cli, ["rollout", "add", str(rid), "n-003"])
    assert out.exit_code == 1 and "is aborted" in out.output
    r = client.post(url, headers=auth_headers, json={"nodes": ["n-003"]})
    assert r.status_code == 409 and "aborted" in r.json["error"]
    assert len(ota_store.rollout_nodes(db, rid)) == 4
