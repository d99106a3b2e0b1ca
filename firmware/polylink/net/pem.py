"""Trusted certificates for MicroPython's `ssl`, from a PEM file on flash, as DER.

mbedTLS parses PEM only when built with MBEDTLS_PEM_PARSE_C; the MicroPython Unix port we test
on is built without it ("invalid cert" for any PEM cadata) and accepts DER, which every mbedTLS
build parses. So the node hands `load_verify_locations` DER, one certificate per call (mbedTLS
adds each to the context's trusted chain), decoded a line at a time: the file is never read
whole into RAM, and ca.pem stays the one format provisioning writes for every port.
"""

import binascii

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


class PEMError(OSError):
    """The CA file holds no certificate this node can read. An OSError, so the link logs it and
    retries like any refused connection instead of its task dying (MicroPython's ssl raises
    ValueError for a certificate it cannot parse)."""


def trust(ctx, path):
    """Load every certificate of the PEM file path into ctx; return how many."""
    n = 0
    body = None
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line == _BEGIN:
                body = bytearray()
            elif line == _END and body is not None:
                try:
                    der = binascii.a2b_base64(bytes(body))
                except ValueError:
                    der = b""
                if not der:  # a2b_base64 skips characters outside base64 on CPython
                    raise PEMError("%s: certificate %d is not base64" % (path, n + 1))
                try:
                    ctx.load_verify_locations(cadata=der)
                except ValueError as e:  # mbedTLS: "invalid cert"
                    raise PEMError("%s: certificate %d is not one this node can read (%s)"
                                   % (path, n + 1, e)) from None
                body = None
                n += 1
            elif body is not None:
                body.extend(line)
    if not n:
        raise PEMError("%s holds no PEM certificate" % path)
    return n
