"""LoRaWAN 1.0.x cryptography on AES-128 ECB (cryptolib): AES-CMAC, payload cipher, join keys.

The ESP32 MicroPython build offers `cryptolib.aes(key, 1)` (ECB) and nothing else of AES, so
CMAC (RFC 4493) and the counter-mode payload cipher (LoRaWAN 1.0.x section 4.3.3) are built here
from single-block encryptions. On CPython the host port installs a `cryptolib` with the same API
(firmware/host/cryptolib, on the pinned `cryptography` package).
"""

from cryptolib import aes
from micropython import const

_ECB = const(1)
UP = const(0)
DOWN = const(1)


def encrypt_block(key, block) -> bytes:
    """AES-128 of one 16-byte block."""
    out = bytearray(16)
    aes(key, _ECB).encrypt(block, out)
    return bytes(out)


def _shift1(b):
    """b << 1 over 16 bytes, in place; return the bit shifted out."""
    carry = 0
    for i in range(15, -1, -1):
        v = b[i]
        b[i] = ((v << 1) & 0xFF) | carry
        carry = v >> 7
    return carry


def cmac(key, *parts) -> bytes:
    """AES-CMAC (RFC 4493) of the concatenation of parts; 16 bytes."""
    c = aes(key, _ECB)
    k = bytearray(16)
    c.encrypt(bytes(16), k)
    if _shift1(k):
        k[15] ^= 0x87
    n = 0
    for p in parts:
        n += len(p)
    complete = n and n % 16 == 0
    if not complete:
        # K2 for a padded last block
        if _shift1(k):
            k[15] ^= 0x87
    x = bytearray(16)
    blk = bytearray(16)
    pos = 0  # bytes of the current block filled
    done = 0  # message bytes consumed
    last = n - (16 if complete else n % 16)  # where the last block starts
    for p in parts:
        for b in p:
            if done >= last:
                blk[pos] = b
            else:
                x[pos] ^= b
            pos += 1
            done += 1
            if pos == 16 and done <= last:
                c.encrypt(x, x)
                pos = 0
    # last block: the bytes gathered in blk[0:pos], padded 10..0 when short
    if not complete:
        blk[pos] = 0x80
        for i in range(pos + 1, 16):
            blk[i] = 0
    for i in range(16):
        x[i] ^= blk[i] ^ k[i]
    c.encrypt(x, x)
    return bytes(x)


def _b_block(first, direction, dev_addr, fcnt, last):
    b = bytearray(16)
    b[0] = first
    b[5] = direction
    b[6:10] = dev_addr
    b[10] = fcnt & 0xFF
    b[11] = (fcnt >> 8) & 0xFF
    b[12] = (fcnt >> 16) & 0xFF
    b[13] = (fcnt >> 24) & 0xFF
    b[15] = last
    return b


def data_mic(nwk_skey, direction, dev_addr, fcnt, msg) -> bytes:
    """The 4-byte MIC of a data frame; msg is MHDR..FRMPayload, dev_addr 4 bytes as on air."""
    return cmac(nwk_skey, _b_block(0x49, direction, dev_addr, fcnt, len(msg)), msg)[:4]


def crypt_payload(key, direction, dev_addr, fcnt, buf, start, end) -> None:
    """Encrypt or decrypt buf[start:end] in place (the cipher is its own inverse)."""
    c = aes(key, _ECB)
    a = _b_block(0x01, direction, dev_addr, fcnt, 0)
    s = bytearray(16)
    i = 0
    pos = start
    while pos < end:
        i += 1
        a[15] = i & 0xFF
        c.encrypt(a, s)
        j = 0
        while j < 16 and pos < end:
            buf[pos] ^= s[j]
            j += 1
            pos += 1


def join_mic(app_key, msg) -> bytes:
    """MIC of a join-request or of a join-accept (msg = MHDR..CFList, in clear)."""
    return cmac(app_key, msg)[:4]


def decrypt_join_accept(app_key, phy) -> bytearray:
    """Join-accept in clear (MHDR kept); the network encrypted it with AES decrypt, so: encrypt."""
    if len(phy) not in (17, 33):
        raise ValueError("join-accept must be 17 or 33 bytes, got %d" % len(phy))
    out = bytearray(phy)
    c = aes(app_key, _ECB)
    blk = bytearray(16)
    for off in range(1, len(phy), 16):
        c.encrypt(bytes(phy[off : off + 16]), blk)
        out[off : off + 16] = blk
    return out


def session_keys(app_key, app_nonce, net_id, dev_nonce):
    """(NwkSKey, AppSKey) of LoRaWAN 1.0.x; nonces and net_id as they are on air (little-endian)."""
    b = bytearray(16)
    b[1:4] = app_nonce
    b[4:7] = net_id
    b[7:9] = dev_nonce
    b[0] = 0x01
    nwk = encrypt_block(app_key, b)
    b[0] = 0x02
    app = encrypt_block(app_key, b)
    return nwk, app
