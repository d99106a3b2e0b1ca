"""Release signing: the fleet's `cryptography` signatures against the node's own verifier."""

import hashlib
import json
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from polylink.ota import ecdsa

from fleet.ota import releases as ota

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "ota_v1.json").read_text())


def test_node_verifier_agrees_with_cryptography_on_random_messages():
    key = ec.generate_private_key(ec.SECP256R1())
    pub = bytes.fromhex(ota.public_hex(key))
    for _ in range(25):
        msg = secrets.token_bytes(secrets.randbelow(300))
        line = ota.sign(key, "k", msg)
        sig = bytes.fromhex(line.split()[1])
        ecdsa.verify(pub, msg, sig)
        assert ota.verify({"k": pub.hex()}, msg, line) == "k"
        with pytest.raises(ecdsa.SignatureError):
            ecdsa.verify(pub, msg + b"x", sig)
        with pytest.raises(ota.ReleaseError, match="does not match"):
            ota.verify({"k": pub.hex()}, msg + b"x", line)


def test_vector_file_is_what_cryptography_says():
    # The vectors the node tests use under MicroPython are checked here by the library.
    for c in VECTORS["ecdsa"]:
        line = "k " + c["sig"]
        msg = bytes.fromhex(c["msg"])
        if c["valid"]:
            assert ota.verify({"k": c["public"]}, msg, line) == "k"
        else:
            with pytest.raises(ota.ReleaseError):
                ota.verify({"k": c["public"]}, msg, line)
    rel = VECTORS["release"]
    assert ota.verify(rel["keys"], rel["manifest"].encode(), rel["sig"]) == "k1"
    m = json.loads(rel["manifest"])
    for f in m["files"]:
        assert hashlib.sha256(rel["files"][f["sha256"]].encode()).hexdigest() == f["sha256"]
