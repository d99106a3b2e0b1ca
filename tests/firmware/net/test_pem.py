"""polylink/net/pem.py: every certificate of a PEM file goes to the context as DER, a line at a
time; a file without one, or one the TLS library refuses, is an OSError naming the file.
Runs under CPython and MicroPython (tests/test_micropython.py); MicroPython's own `ssl` taking
the certificates: tests/host/test_unix_port_tls.py."""

import binascii
import hashlib

from _check import eq, raises
from _fw import rmtree, tmpdir
from polylink.net import pem

# A P-256 CA made by fleet/tls/certs.make_ca(); DER_SHA256 is the digest of its DER encoding as
# the `cryptography` package wrote it (not as pem.py decodes it).
# the `cryptography` package wrote it (not as tlsca decodes it).
CA_PEM = b"""-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUIPC3OZIzuJ5XLg9HivgGBprEVCQwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRUG9seWxpbmsgZmxlZXQgQ0EwHhcNMjYxMjA0MTQ0OTE0WhcN
MzYxMjAxMTQ1NDE0WjAcMRowGAYDVQQDDBFQb2x5bGluayBmbGVldCBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABDnlR2C8ooggbRDecALkV8bD854AR67vdo9j
ZUimoffTGX5pEpz32RzffP7pcevyFot7yDSuvsvLKLfB28xltwSjRTBDMBIGA1Ud
EwEB/wQIMAYBAf8CAQAwDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBRp6Z0F9quk
hmbySDHBSWhiNN20ZTAKBggqhkjOPQQDAgNIADBFAiEAsvGqoXmMFLMsv1XggBq1
CB/oy8Tw7PYq5Qe1XWDrjIoCICYza1TZrcJYdDfjEFJ+DwwRQvdYNhij3BWAvKX8
8ZSF
-----END CERTIFICATE-----
"""
DER_SHA256 = "06aec684ed93913ac02499be364217e958adb19d07ff9f9d09be45daeede9b07"
# The same certificate with its signature's last bytes changed: another DER, still base64.
OTHER_PEM = CA_PEM.replace(b"8ZSF", b"8ZSA")


class Context:
    """What pem.trust() calls of an ssl.SSLContext; refuse=True answers as mbedTLS does to bytes
    that are no certificate."""

    def __init__(self, refuse=False):
        self.loaded = []
        self.refuse = refuse

    def load_verify_locations(self, cadata):
        if self.refuse:
            raise ValueError("invalid cert")
        self.loaded.append(bytes(cadata))


def _digest(b):
    return binascii.hexlify(hashlib.sha256(b).digest()).decode()


def _write(d, name, data):
    with open(d + "/" + name, "wb") as f:
        f.write(data)
    return d + "/" + name


def test_each_certificate_of_a_bundle_goes_in_as_der():
    d = tmpdir("pem")
    try:
        # Text before (as `openssl x509 -text` leaves), CRLF line ends, two certificates.
        text = b"subject=CN = Polylink fleet CA\r\n" + CA_PEM.replace(b"\n", b"\r\n") + OTHER_PEM
        ctx = Context()
        eq(pem.trust(ctx, _write(d, "ca.pem", text)), 2, "certificates loaded")
        eq(len(ctx.loaded[0]), 387, "DER length")
        eq(_digest(ctx.loaded[0]), DER_SHA256, "DER of the first certificate")
        eq(ctx.loaded[1][:-4] == ctx.loaded[0][:-4] and ctx.loaded[1] != ctx.loaded[0], True,
           "the second certificate is its own")
    finally:
        rmtree(d)


def test_a_file_without_a_certificate_is_an_oserror_naming_it():
    d = tmpdir("pem")
    try:
        for name, text, words in (
            ("empty.pem", b"", "holds no PEM certificate"),
            ("cut.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n", "holds no PEM certificate"),
            ("junk.pem", b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
             "is not base64"),
        ):
            path = _write(d, name, text)
            e = raises(OSError, pem.trust, Context(), path)
            if path not in str(e) or words not in str(e):
                raise AssertionError("%s: %s" % (name, e))
    finally:
        rmtree(d)


def test_a_certificate_the_tls_library_refuses_is_an_oserror_naming_it():
    d = tmpdir("pem")
    try:
        path = _write(d, "ca.pem", CA_PEM)
        e = raises(OSError, pem.trust, Context(refuse=True), path)
        if path not in str(e) or "invalid cert" not in str(e):
            raise AssertionError(str(e))
    finally:
        rmtree(d)
