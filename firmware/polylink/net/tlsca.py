"""The CA a node trusts, as MicroPython's ssl takes it: one DER certificate.

MicroPython documents `cadata` as DER and its mbedTLS builds need not parse PEM (the Unix port's
does not: "invalid cert"); provisioning writes PEM (ca.pem). So the first certificate of the file
is decoded here, a line at a time, never the whole file at once: some 0.5 KB of DER for a P-256
CA. Loaded only for a TLS connection (device RAM).
"""

from binascii import a2b_base64

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def load(ctx, path):
    """Make ctx (an ssl.SSLContext) trust the CA in path (PEM or DER); OSError saying what is
    wrong with the file otherwise, which the link logs and retries like any refused connection."""
    try:
        ctx.load_verify_locations(cadata=der(path))
    except ValueError as e:  # mbedTLS could not parse it: "invalid cert"
        raise OSError("the CA in %s is not a certificate this node can read (%s)"
                      % (path, e)) from None


def der(path):
    """The DER bytes of the first certificate in path."""
    with open(path, "rb") as f:
        first = f.read(1)
        if first == b"\x30":  # an ASN.1 SEQUENCE: the file is DER already
            return first + f.read()
        f.seek(0)
        out = None
        for line in f:
            line = line.strip()
            if out is None:
                if line == _BEGIN:
                    out = bytearray()
            elif line == _END:
                return bytes(out)
            else:
                out.extend(a2b_base64(line))
    raise OSError("%s holds no PEM certificate" % path)
