"""MicroPython's `cryptolib` for the host port, on the pinned `cryptography` package.

Only what the firmware uses: `aes(key, 1)` (ECB) with encrypt/decrypt of whole 16-byte blocks,
into a new bytes object or into out_buf (which may be in_buf itself), like the ESP32 build.
"""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MODE_ECB = 1


class aes:  # noqa: N801 - MicroPython's name
    """AES in ECB mode; one object encrypts or decrypts, not both (as on MicroPython)."""

    def __init__(self, key, mode, iv=None):
        if mode != MODE_ECB:
            raise ValueError(f"host cryptolib: only mode 1 (ECB) is provided, got {mode!r}")
        if len(key) not in (16, 32):
            raise ValueError(f"key must be 16 or 32 bytes, got {len(key)}")
        self._cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB())
        self._dir = None

    def _run(self, direction, in_buf, out_buf):
        if len(in_buf) % 16:
            raise ValueError(f"blksize mismatch: {len(in_buf)} bytes is not a multiple of 16")
        if self._dir not in (None, direction):
            raise OSError("can't encrypt & decrypt")
        self._dir = direction
        ctx = self._cipher.encryptor() if direction == "e" else self._cipher.decryptor()
        data = ctx.update(bytes(in_buf)) + ctx.finalize()
        if out_buf is None:
            return data
        if len(out_buf) < len(data):
            raise ValueError("output too small")
        out_buf[: len(data)] = data
        return None

    def encrypt(self, in_buf, out_buf=None):
        return self._run("e", in_buf, out_buf)

    def decrypt(self, in_buf, out_buf=None):
        return self._run("d", in_buf, out_buf)
