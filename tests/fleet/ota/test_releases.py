"""Releases: keys, build with mpy-cross, signing, refusals, API/CLI/UI upload, Range serving."""

import io
import json
import shutil
import tarfile

import pytest
from polylink.ota.credential import file_password

from fleet.cli import cli
from fleet.identity import provision
from fleet.ota import releases as ota
from fleet.store import identity as identity_store
from fleet.store import ota as ota_store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real release built from firmware/ (mpy-cross) with its own key, shared by the tests."""
    from fleet.settings import Settings

    d = tmp_path_factory.mktemp("rel")
    s = Settings(data_dir=d / "data", port=8000, mqtt_port=1, mqtt_url=None)
    ota.create_key(s, "k1")
    path = ota.build(s, "0.2.0", ["ESP32_GENERIC", "ESP32_GENERIC_OTA"], out_dir=d)
    return s, path


def _trust(settings, built_settings):
    """Give this test's DATA_DIR the module's signing key."""
    src = built_settings.data_dir / "ota"
    shutil.copytree(src, settings.data_dir / "ota", dirs_exist_ok=True)


def _bundle(path) -> tuple[bytes, str, dict]:
    return ota.read_bundle(path.read_bytes())


def test_keys_create_list_retire_and_provisioning_trusts_them(settings, db):
    pub = ota.create_key(settings, "release-2026")
    assert len(pub) == 130 and pub.startswith("04")
    ota.create_key(settings, "release-2027")
    assert [k["id"] for k in ota.list_keys(settings)] == ["release-2026", "release-2027"]
    pem = settings.data_dir / "ota" / "keys" / "release-2026.pem"
    assert pem.stat().st_mode & 0o077 == 0, "private key readable by others"
    with pytest.raises(ota.ReleaseError, match="already exists"):
        ota.create_key(settings, "release-2026")
    with pytest.raises(ota.ReleaseError, match="key id"):
        ota.create_key(settings, "Bad Id")
    # New nodes are minted trusting both keys (rotation: old and next).
    ident = provision.register(db, settings, "n-1")
    assert set(ident["ota"]["keys"]) == {"release-2026", "release-2027"}
    ota.retire_key(settings, "release-2026")
    assert not pem.exists()
    assert [k["id"] for k in ota.list_keys(settings)] == ["release-2027"]


def test_build_compiles_every_app_file_and_signs(built):
    s, path = built
    manifest, sig, blobs = _bundle(path)
    m = ota.check_release(ota.trusted_keys(s), manifest, sig, blobs)
    paths = {f["path"] for f in m["files"]}
    assert "polylink/node.mpy" in paths and "polylink/ota/agent.mpy" in paths
    assert all(p.endswith(".mpy") for p in paths)
    assert m["boards"] == ["ESP32_GENERIC", "ESP32_GENERIC_OTA"] and m["key"] == "k1"
    node = next(f for f in m["files"] if f["path"] == "polylink/node.mpy")
    assert blobs[node["sha256"]][:1] == b"M", "an .mpy file starts with 'M'"


def test_refuses_bad_signature_hash_mismatch_unknown_key_and_board(built, settings, db):
    s, path = built
    _trust(settings, s)
    manifest, sig, blobs = _bundle(path)
    keys = ota.trusted_keys(settings)
    with pytest.raises(ota.ReleaseError, match="bad signature"):
        ota.check_release(keys, manifest.replace(b"0.2.0", b"0.2.1"), sig, blobs)
    victim = next(iter(blobs))
    tampered = dict(blobs, **{victim: blobs[victim] + b"x"})
    with pytest.raises(ota.ReleaseError, match="hash mismatch"):
        ota.check_release(keys, manifest, sig, tampered)
    with pytest.raises(ota.ReleaseError, match="does not trust"):
        ota.check_release({}, manifest, sig, blobs)
    # A manifest naming a board the fleet does not know, properly signed.
    m = json.loads(manifest)
    key_id, key = ota.signing_key(settings, "k1")
    odd = ota.manifest_bytes("0.2.0", "k1", ["TOASTER_9000"], m["files"])
    with pytest.raises(ota.ReleaseError, match="incompatible board"):
        ota.check_release(keys, odd, ota.sign(key, key_id, odd), blobs)
    assert ota_store.list_releases(db) == []


def test_api_upload_list_duplicate_and_roles(built, settings, client, db, auth_headers):
    s, path = built
    _trust(settings, s)
    data = path.read_bytes()
    hdr = dict(auth_headers, **{"Content-Type": "application/x-tar"})
    assert client.post("/api/v1/releases", data=data).status_code == 401
    r = client.post("/api/v1/releases", data=data, headers=hdr)
    assert r.status_code == 201, r.json
    assert r.json["version"] == "0.2.0" and r.json["key_id"] == "k1"
    r = client.post("/api/v1/releases", data=data, headers=hdr)
    assert r.status_code == 409 and "immutable" in r.json["error"]
    assert [x["version"] for x in client.get("/api/v1/releases",
                                             headers=auth_headers).json["releases"]] == ["0.2.0"]
    r = client.post("/api/v1/releases", data=b"not a tar", headers=hdr)
    assert r.status_code == 400 and "not a release bundle" in r.json["error"]
    # A viewer token may read but not upload.
    from fleet.web.auth import create_token

    viewer = create_token(db, "v", role="viewer")
    r = client.post("/api/v1/releases", data=data,
                    headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403


def test_api_refuses_a_tampered_bundle_with_a_clear_message(built, settings, client,
                                                            auth_headers):
    s, path = built
    _trust(settings, s)
    manifest, sig, blobs = _bundle(path)
    sha = next(iter(blobs))
    blobs[sha] = blobs[sha][:-1] + bytes([blobs[sha][-1] ^ 1])
    bad = settings.data_dir / "bad.tar"
    bad.parent.mkdir(parents=True, exist_ok=True)
    ota.write_bundle(bad, manifest, sig, blobs)
    r = client.post("/api/v1/releases", data=bad.read_bytes(), headers=auth_headers)
    assert r.status_code == 400 and r.json["error"].startswith("hash mismatch")


def test_node_fetches_files_with_its_login_and_range(built, settings, client, db):
    s, path = built
    _trust(settings, s)
    ota.upload(db, settings, path.read_bytes())
    ident = provision.register(db, settings, "n-1", board="ESP32_GENERIC", sync=False)
    login = ("n-1", file_password(ident["mqtt"]["password"]))
    manifest, sig, blobs = _bundle(path)
    sha, body = max(blobs.items(), key=lambda kv: len(kv[1]))
    url = f"/ota/v1/files/{sha}"
    assert client.get(url).status_code == 401
    assert client.get(url, auth=("n-1", "wrong")).status_code == 401
    # The MQTT password is no file login: a node's two credentials work only where they belong.
    assert client.get(url, auth=("n-1", ident["mqtt"]["password"])).status_code == 401
    # A release no rollout offers the node: its files are not the node's to fetch (the signed
    # manifest is, so a node can refuse a replayed offer saying why).
    assert client.get(url, auth=login).status_code == 403
    assert client.get("/ota/v1/releases/0.2.0/manifest.json", auth=login).status_code == 200
    assert client.get("/ota/v1/nodes/n-1/offer", auth=login).status_code == 204
    from fleet.ota import rollouts

    rid = rollouts.create(db, "0.2.0", {"nodes": ["n-1"]}, [{"percent": 100, "soak": 0}])
    # Another registered node with a valid login of its own, given n-1's URL: nothing.
    other = provision.register(db, settings, "n-2", board="ESP32_GENERIC", sync=False)
    other_login = ("n-2", file_password(other["mqtt"]["password"]))
    assert client.get(url, auth=other_login).status_code == 403
    r = client.get(url, auth=login)
    assert r.status_code == 200 and r.data == body
    r = client.get(url, auth=login, headers={"Range": "bytes=100-"})
    assert r.status_code == 206 and r.data == body[100:]
    assert r.headers["Content-Range"] == f"bytes 100-{len(body) - 1}/{len(body)}"
    r = client.get("/ota/v1/releases/0.2.0/manifest.json", auth=login)
    assert r.data == manifest
    r = client.get("/ota/v1/releases/0.2.0/manifest.sig", auth=login)
    assert r.data.decode().strip() == sig
    assert client.get("/ota/v1/files/" + "0" * 64, auth=login).status_code == 404
    assert client.get("/ota/v1/releases/0.2.0/../x", auth=login).status_code == 404
    assert client.get("/ota/v1/nodes/n-2/offer", auth=login).status_code == 403
    # A node that checks periodically finds the offer its rollout holds for it.
    r = client.get("/ota/v1/nodes/n-1/offer", auth=login)
    assert r.status_code == 200 and r.json == {"version": "0.2.0", "rid": rid}
    identity_store.revoke_credentials(db, "n-1")
    assert client.get(url, auth=login).status_code == 401, "a revoked node gets nothing"


def test_cli_keys_build_upload_list(runner, settings, db):
    r = runner.invoke(cli, ["keys", "create", "k9"])
    assert r.exit_code == 0 and "key k9 created" in r.output, r.output
    assert "k9" in runner.invoke(cli, ["keys", "list"]).output
    r = runner.invoke(cli, ["release", "build", "1.0.0"])
    assert r.exit_code == 0, r.output
    assert "release 1.0.0 stored" in r.output
    assert (settings.data_dir / "releases" / "polylink-1.0.0.tar").exists(), "RELEASE_DIR default"
    assert "1.0.0" in runner.invoke(cli, ["release", "list"]).output
    r = runner.invoke(cli, ["release", "build", "1.0.0"])
    assert r.exit_code == 1 and "already exists" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["release", "build", "1.0", "--no-upload"])
    assert r.exit_code == 1 and "MAJOR.MINOR.PATCH" in r.output
    r = runner.invoke(cli, ["release", "build", "1.0.1", "--board", "TOASTER"])
    assert r.exit_code == 1 and "unknown board 'TOASTER'" in r.output


def test_bundle_reader_refuses_stray_members():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/passwd")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ota.ReleaseError, match="unexpected file"):
        ota.read_bundle(buf.getvalue())


# --- MicroPython runtime images ------------------------------------------------------------------

def _app_image(*a, **kw) -> bytes:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "vectors"))
    from make_runtime_vectors import app_image

    return app_image(*a, **kw)


def test_build_with_a_runtime_image_signs_and_serves_it(settings, db, tmp_path, client):
    ota.create_key(settings, "k1")
    rt = tmp_path / "ESP32_GENERIC-OTA-v1.25.0.app-bin"
    rt.write_bytes(_app_image("esp32", "1.25.0"))
    path = ota.build(settings, "0.3.0", ["ESP32_GENERIC_OTA"], runtime=rt, compile_mpy=False)
    manifest, sig, blobs = _bundle(path)
    m = ota.check_release(ota.trusted_keys(settings), manifest, sig, blobs)
    import hashlib

    data = rt.read_bytes()
    assert m["runtime"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "micropython": "1.25.0", "chip": "esp32"}
    assert blobs[m["runtime"]["sha256"]] == data, "the image travels in the bundle"
    ota.upload(db, settings, path.read_bytes())
    ident = provision.register(db, settings, "n-rt", board="ESP32_GENERIC_OTA")
    login = (ident["mqtt"]["user"], file_password(ident["mqtt"]["password"]))
    from fleet.ota import rollouts

    rollouts.create(db, "0.3.0", {"nodes": ["n-rt"]}, [{"percent": 100, "soak": 0}])
    r = client.get(f"/ota/v1/files/{m['runtime']['sha256']}", auth=login,
                   headers={"Range": "bytes=4096-"})
    assert r.status_code == 206 and r.data == data[4096:], "node resumes the image with Range"
    # The signed manifest is what the node checks: the runtime entry cannot be changed unseen.
    with pytest.raises(ota.ReleaseError, match="bad signature"):
        ota.check_release(ota.trusted_keys(settings),
                          manifest.replace(b'"1.25.0"', b'"1.26.0"'), sig, blobs)
    tampered = dict(blobs, **{m["runtime"]["sha256"]: data[:-1] + b"\x00"})
    with pytest.raises(ota.ReleaseError, match="hash mismatch: the runtime image"):
        ota.check_release(ota.trusted_keys(settings), manifest, sig, tampered)


@pytest.mark.parametrize("case, boards, match", [
    ("no_ota", ["ESP32_GENERIC"], "board ESP32_GENERIC has no OTA partitions"),
    ("mixed", ["ESP32_GENERIC_OTA", "ESP32_GENERIC"], "ESP32_GENERIC has no OTA partitions"),
    ("s3", ["ESP32_GENERIC_OTA"], "built for chip id 9"),
    ("big", ["ESP32_GENERIC_OTA"], "do not fit the 1572864 byte OTA app partition"),
    ("magic", ["ESP32_GENERIC_OTA"], "not an ESP32 app image"),
    ("cut", ["ESP32_GENERIC_OTA"], "not a whole ESP32 app image"),
    ("damaged", ["ESP32_GENERIC_OTA"], "checksum does not match|SHA-256 does not match"),
    ("no_desc", ["ESP32_GENERIC_OTA"], "no app descriptor"),
    ("old", ["ESP32_GENERIC_OTA"], "MicroPython 1.22.2 is older than the 1.23.0"),
])
def test_runtime_image_refusals(settings, tmp_path, case, boards, match):
    ota.create_key(settings, "k1")
    good = _app_image("esp32", "1.25.0", 20000)
    data = {
        "no_ota": good, "mixed": good, "s3": _app_image("esp32s3", "1.25.0", 20000),
        "big": _app_image("esp32", "1.25.0", 1600000), "magic": b"\x00" + good[1:],
        "cut": good[:5000], "damaged": good[:3000] + bytes([good[3000] ^ 0xFF]) + good[3001:],
        "no_desc": _app_image("esp32", "1.25.0", 20000, app_desc=False),
        "old": _app_image("esp32", "1.22.2", 20000),  # make flash refuses it too
    }[case]
    rt = tmp_path / "rt.bin"
    rt.write_bytes(data)
    with pytest.raises(ota.ReleaseError, match=match):
        ota.build(settings, "0.3.0", boards, runtime=rt, compile_mpy=False)
    assert not (settings.data_dir / "releases" / "polylink-0.3.0.tar").exists(), "nothing written"


def test_cli_release_build_runtime(runner, settings, db, tmp_path):
    assert runner.invoke(cli, ["keys", "create", "k9"]).exit_code == 0
    rt = tmp_path / "rt.app-bin"
    rt.write_bytes(_app_image("esp32", "1.25.0", 20000))
    r = runner.invoke(cli, ["release", "build", "0.3.0", "--runtime", str(rt)])
    assert r.exit_code == 1 and "has no OTA partitions" in r.output, r.output
    assert "Traceback" not in r.output
    r = runner.invoke(cli, ["release", "build", "0.3.0", "--board", "ESP32_GENERIC_OTA",
                            "--runtime", str(rt)])
    assert r.exit_code == 0, r.output
    assert "MicroPython 1.25.0 runtime image" in r.output
    r = runner.invoke(cli, ["release", "build", "0.3.1", "--board", "ESP32_GENERIC_OTA",
                            "--runtime", str(tmp_path / "missing.bin")])
    assert r.exit_code == 1 and "cannot read" in r.output, r.output
