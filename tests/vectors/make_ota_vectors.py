"""Writes tests/vectors/ota_v1.json: ECDSA P-256 cases and a small signed release, made with the
fleet's signing code (`cryptography`), for the node's verifier under CPython and MicroPython.

    .venv/bin/python tests/vectors/make_ota_vectors.py
"""

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from fleet import ota

OUT = Path(__file__).with_name("ota_v1.json")


def main():
    k1 = ec.generate_private_key(ec.SECP256R1())
    k2 = ec.generate_private_key(ec.SECP256R1())
    cases = []
    for i, msg in enumerate([b"", b"abc", b"polylink manifest " * 20, bytes(range(256))]):
        key = (k1, k2)[i % 2]
        line = ota.sign(key, "k", msg)
        sig = line.split()[1]
        cases.append({"public": ota.public_hex(key), "msg": msg.hex(), "sig": sig, "valid": True})
        bad = bytearray(msg + b"!")
        cases.append({"public": ota.public_hex(key), "msg": bad.hex(), "sig": sig, "valid": False})
        flipped = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
        cases.append({"public": ota.public_hex(key), "msg": msg.hex(), "sig": flipped,
                      "valid": False})
    files = {"polylink/app.txt": b"new app\n" * 40, "polylink/same.txt": b"unchanged\n" * 10}
    entries = [{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
               for p, b in files.items()]
    manifest = ota.manifest_bytes("0.2.0", "k1", ["ESP32_GENERIC"], entries, created=1764288000)
    release = {
        "keys": {"k1": ota.public_hex(k1), "k2": ota.public_hex(k2)},
        "manifest": manifest.decode(),
        "sig": ota.sign(k1, "k1", manifest),
        "sig_by_k2_named_k1": ota.sign(k2, "k1", manifest),
        "files": {hashlib.sha256(b).hexdigest(): b.decode() for b in files.values()},
    }
    OUT.write_text(json.dumps({"description": __doc__.split("\n\n")[0], "ecdsa": cases,
                               "release": release}, indent=1) + "\n")


if __name__ == "__main__":
    main()
