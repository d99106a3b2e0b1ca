"""ECDSA P-256 with SHA-256 signature verification in pure Python (MicroPython big ints).

Only verification lives on the node; the fleet signs with `cryptography`. Written here because
MicroPython has no public-key crypto module and its hashlib has SHA-256 but not the SHA-512 that
Ed25519 needs (docs/ota.md, "Why ECDSA P-256").
"""

import hashlib

# NIST P-256 (SEC 2 secp256r1); a = -3 is used implicitly in _double.
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5


class SignatureError(ValueError):
    """A signature or public key is malformed, or the signature does not match."""


def _double(x, y, z):
    # Jacobian doubling for a = -3 (dbl-2001-b); z == 0 is the point at infinity.
    if not z or not y:
        return 0, 1, 0
    p = _P
    delta = z * z % p
    gamma = y * y % p
    beta = x * gamma % p
    alpha = 3 * (x - delta) * (x + delta) % p
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = ((y + z) * (y + z) - gamma - delta) % p
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p
    return x3, y3, z3


def _add(x1, y1, z1, x2, y2, z2):
    # Jacobian addition (add-2007-bl), falling back to doubling for equal points.
    if not z1:
        return x2, y2, z2
    if not z2:
        return x1, y1, z1
    p = _P
    z1z1 = z1 * z1 % p
    z2z2 = z2 * z2 % p
    u1 = x1 * z2z2 % p
    u2 = x2 * z1z1 % p
    s1 = y1 * z2 * z2z2 % p
    s2 = y2 * z1 * z1z1 % p
    h = (u2 - u1) % p
    r = 2 * (s2 - s1) % p
    if not h:
        if not r:
            return _double(x1, y1, z1)
        return 0, 1, 0
    i = 4 * h * h % p
    j = h * i % p
    v = u1 * i % p
    x3 = (r * r - j - 2 * v) % p
    y3 = (r * (v - x3) - 2 * s1 * j) % p
    z3 = ((z1 + z2) * (z1 + z2) - z1z1 - z2z2) * h % p
    return x3, y3, z3


def public_key(raw):
    """Return (x, y) of an uncompressed SEC1 point (65 bytes, 0x04 || X || Y) on P-256."""
    if len(raw) != 65 or raw[0] != 4:
        raise SignatureError("public key must be 65 bytes 04||X||Y (uncompressed P-256 point)")
    x = int.from_bytes(raw[1:33], "big")
    y = int.from_bytes(raw[33:], "big")
    if x >= _P or y >= _P or (y * y - x * x * x + 3 * x - _B) % _P:
        raise SignatureError("public key is not a point on P-256")
    return x, y


def verify_digest(pub, digest, sig):
    """Raise SignatureError unless sig (64 bytes r||s) signs the SHA-256 digest under pub (x, y)."""
    if len(sig) != 64:
        raise SignatureError("signature must be 64 bytes (r||s), got %d" % len(sig))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    n = _N
    if not 0 < r < n or not 0 < s < n:
        raise SignatureError("signature r or s out of range")
    e = int.from_bytes(digest, "big") % n
    w = pow(s, n - 2, n)
    u1 = e * w % n
    u2 = r * w % n
    qx, qy = pub
    # Shamir's trick: one pass over both scalars with G, Q and G+Q.
    sx, sy, sz = _add(_GX, _GY, 1, qx, qy, 1)
    x, y, z = 0, 1, 0
    bit = 255
    while bit >= 0:
        x, y, z = _double(x, y, z)
        a = u1 >> bit & 1
        b = u2 >> bit & 1
        if a and b:
            x, y, z = _add(x, y, z, sx, sy, sz)
        elif a:
            x, y, z = _add(x, y, z, _GX, _GY, 1)
        elif b:
            x, y, z = _add(x, y, z, qx, qy, 1)
        bit -= 1
    if not z:
        raise SignatureError("signature does not match (point at infinity)")
    zi = pow(z, _P - 2, _P)
    if x * zi * zi % _P % n != r:
        raise SignatureError("signature does not match")


def verify(pub_raw, message, sig):
    """Raise SignatureError unless sig (r||s) is an ECDSA P-256 SHA-256 signature of message."""
    verify_digest(public_key(pub_raw), hashlib.sha256(message).digest(), sig)
