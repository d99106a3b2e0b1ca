"""polylink/net/pem.py: every certificate of a PEM file goes to the context as DER, a line at a
time; a file without one is refused with its name. (MicroPython's own `ssl` taking them:
tests/host/test_unix_port_tls.py.)"""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from polylink.net import pem

from fleet.tls import certs


class Context:
    def __init__(self):
        self.loaded = []

    def load_verify_locations(self, cadata):
        self.loaded.append(bytes(cadata))


def test_each_certificate_goes_in_as_der(tmp_path):
    roots = [certs.make_ca(f"root {i}")[0] for i in range(2)]
    text = b"# a bundle\n" + b"".join(
        r.public_bytes(serialization.Encoding.PEM).replace(b"\n", b"\r\n") for r in roots)
    (tmp_path / "ca.pem").write_bytes(text)
    ctx = Context()
    assert pem.trust(ctx, str(tmp_path / "ca.pem")) == 2
    assert [x509.load_der_x509_certificate(d) for d in ctx.loaded] == roots


@pytest.mark.parametrize("text, message", [
    (b"", "holds no PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "holds no PEM certificate"),  # cut short
    (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "is not base64"),
])
def test_a_file_without_a_certificate_is_refused(tmp_path, text, message):
    (tmp_path / "ca.pem").write_bytes(text)
    with pytest.raises(pem.PEMError, match=message):
        pem.trust(Context(), str(tmp_path / "ca.pem"))
