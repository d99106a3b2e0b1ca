"""Writes tests/vectors/ota_v1.json: ECDSA P-256 cases and a small signed release, made with the
fleet's signing code (`cryptography`), for the node's verifier under CPython and MicroPython.

    .venv/bin/python tests/vectors/make_ota_vectors.py
"""

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from fleet.ota import releases as ota

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
    # Key rotation over the air: the same release signed with k1 and carrying {k2} as the key set
    # nodes trust from then on, and the same signed with k2 (what comes after the rotation).
    to_k2 = ota.manifest_bytes("0.2.0", "k1", ["ESP32_GENERIC"], entries, created=1764288000,
                               keys={"k2": ota.public_hex(k2)})
    by_k2 = ota.manifest_bytes("0.2.0", "k2", ["ESP32_GENERIC"], entries, created=1764288000,
                               keys={"k2": ota.public_hex(k2)})
    rotation = {"to_k2": to_k2.decode(), "to_k2_sig": ota.sign(k1, "k1", to_k2),
                "by_k2": by_k2.decode(), "by_k2_sig": ota.sign(k2, "k2", by_k2)}
    # Rollback: the same release as an operator's signed downgrade for nodes on 0.3.0 only.
    down = ota.manifest_bytes("0.2.0", "k1", ["ESP32_GENERIC"], entries, created=1764288000,
                              downgrade_from="0.3.0")
    downgrade = {"from_0_3_0": down.decode(), "from_0_3_0_sig": ota.sign(k1, "k1", down)}
    OUT.write_text(json.dumps({"description": __doc__.split("\n\n")[0], "ecdsa": cases,
                               "release": release, "rotation": rotation,
                               "downgrade": downgrade}, indent=1) + "\n")


if __name__ == "__main__":
    main()
