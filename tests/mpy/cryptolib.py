"""Stand-in for `cryptolib` under the wasm MicroPython, which is built without it.

The pyscript WebAssembly build of MicroPython 1.27 has no cryptolib module (the ESP32 build
does), so run.mjs mounts this file as /lib/cryptolib.py for the firmware tests there. Pure
Python AES-128/256 encryption in ECB mode (FIPS-197), written for the tests; slow, but
LoRaWAN needs only encryption and few blocks. tests/firmware/test_lorawan.py checks it against
the FIPS-197 and RFC 4493 vectors; on CPython the same tests run on the host cryptolib.
"""


def _xt(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _mul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a = _xt(a)
        b >>= 1
    return r


def _sbox():
    inv = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if _mul(a, b) == 1:
                inv[a] = b
                break
    s = bytearray(256)
    for x in range(256):
        b = inv[x]
        r = b
        for _ in range(4):
            b = ((b << 1) | (b >> 7)) & 0xFF
            r ^= b
        s[x] = r ^ 0x63
    return s


_S = _sbox()


def _expand(key):
    nk = len(key) // 4
    rounds = nk + 6
    w = bytearray(key)
    rcon = 1
    i = nk
    while len(w) < 16 * (rounds + 1):
        t = bytearray(w[-4:])
        if i % nk == 0:
            t = bytearray((_S[t[1]] ^ rcon, _S[t[2]], _S[t[3]], _S[t[0]]))
            rcon = _xt(rcon)
        elif nk > 6 and i % nk == 4:
            t = bytearray(_S[v] for v in t)
        base = len(w) - 4 * nk
        for j in range(4):
            w.append(w[base + j] ^ t[j])
        i += 1
    return w, rounds


class aes:
    def __init__(self, key, mode, iv=None):
        if mode != 1:
            raise ValueError("test cryptolib: only mode 1 (ECB)")
        if len(key) not in (16, 32):
            raise ValueError("key must be 16 or 32 bytes")
        self._w, self._rounds = _expand(bytes(key))

    def _block(self, blk, out, off):
        w = self._w
        s = bytearray(16)
        for i in range(16):
            s[i] = blk[off + i] ^ w[i]
        for r in range(1, self._rounds + 1):
            t = bytearray(16)
            for c in range(4):
                for row in range(4):
                    # SubBytes + ShiftRows: row `row` of column c comes from column c + row
                    t[4 * c + row] = _S[s[4 * ((c + row) % 4) + row]]
            if r != self._rounds:
                for c in range(4):
                    a0, a1, a2, a3 = t[4 * c], t[4 * c + 1], t[4 * c + 2], t[4 * c + 3]
                    x = a0 ^ a1 ^ a2 ^ a3
                    t[4 * c] = a0 ^ x ^ _xt(a0 ^ a1) & 0xFF
                    t[4 * c + 1] = a1 ^ x ^ _xt(a1 ^ a2) & 0xFF
                    t[4 * c + 2] = a2 ^ x ^ _xt(a2 ^ a3) & 0xFF
                    t[4 * c + 3] = a3 ^ x ^ _xt(a3 ^ a0) & 0xFF
            k = 16 * r
            for i in range(16):
                s[i] = t[i] ^ w[k + i]
        out[off : off + 16] = s

    def encrypt(self, in_buf, out_buf=None):
        n = len(in_buf)
        if n % 16:
            raise ValueError("blksize mismatch")
        src = bytes(in_buf)
        out = bytearray(n) if out_buf is None else out_buf
        for off in range(0, n, 16):
            self._block(src, out, off)
        return bytes(out) if out_buf is None else None

    def decrypt(self, in_buf, out_buf=None):
        raise OSError("test cryptolib: decrypt is not provided (LoRaWAN end devices only encrypt)")
