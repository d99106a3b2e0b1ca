"""tlsca.py: the CA file (PEM, as provisioning writes it, or DER) handed to ssl as one DER
certificate, decoded a line at a time."""

import binascii
import hashlib

from _check import eq, raises
from _fw import rmtree, tmpdir
from polylink.net import tlsca

# A P-256 CA made by fleet/tls/certs.make_ca(); DER_SHA256 is the digest of its DER encoding as
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


def _digest(b):
    return binascii.hexlify(hashlib.sha256(b).digest()).decode()


def _write(d, name, data):
    with open(d + "/" + name, "wb") as f:
        f.write(data)
    return d + "/" + name


def test_pem_is_decoded_to_the_der_of_the_first_certificate():
    d = tmpdir("tlsca")
    try:
        der = tlsca.der(_write(d, "ca.pem", CA_PEM))
        eq(len(der), 387)
        eq(_digest(der), DER_SHA256)
        # Text before it (as `openssl x509 -text` leaves) and a second certificate after it:
        # the first one is the CA (MicroPython's ssl takes a single certificate).
        other = CA_PEM.replace(b"8ZSF", b"8ZSA")
        noisy = b"subject=CN = Polylink fleet CA\r\n" + CA_PEM.replace(b"\n", b"\r\n") + other
        eq(_digest(tlsca.der(_write(d, "noisy.pem", noisy))), DER_SHA256)
        # A DER file is handed over as it is.
        eq(tlsca.der(_write(d, "ca.der", der)), der)
    finally:
        rmtree(d)


def test_a_file_without_a_certificate_is_an_oserror_naming_it():
    d = tmpdir("tlsca")
    try:
        path = _write(d, "ca.pem", b"not a certificate\n")
        e = raises(OSError, tlsca.der, path)
        if path not in str(e):
            raise AssertionError("the error does not name the file: %s" % e)
    finally:
        rmtree(d)
