"""`fleet tls`: the private CA and server certificate, operator certificates, renewal, and the
warning in the UI and the alert when a certificate is due."""

import datetime
import ssl
import stat

import pytest
from cryptography import x509

from fleet import upkeep
from fleet.cli import cli
from fleet.store import alerts as alert_store
from fleet.tls import certs


def now_plus(days):
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


def test_init_makes_a_ca_and_a_server_certificate_python_ssl_accepts(tmp_path):
    d = certs.init(tmp_path / "tls", ["fleet.example.org", "192.168.1.10"])
    for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    found = {c["role"]: c for c in certs.certificates(d)}
    assert found["server"]["names"] == ["fleet.example.org", "192.168.1.10"]
    assert 364 <= found["server"]["days_left"] <= 365 and not found["server"]["renew"]
    assert found["ca"]["days_left"] > 3600
    # What a node does: trust ca.pem alone and check the server's name.
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(d / "server.pem", d / "server.key")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificates((d / "server.pem").read_bytes())[0]
    leaf.verify_directly_issued_by(ca)


def test_doctor_gets_path_names_and_expiry_of_the_fleets_certificates(data_dir, monkeypatch):
    monkeypatch.delenv("TLS_DIR", raising=False)
    assert certs.fleet_certificates(data_dir) == []
    certs.init(data_dir / "tls", ["fleet.example.org"])
    server, ca = certs.fleet_certificates(data_dir)
    assert server["path"] == (data_dir / "tls" / "server.pem").resolve()
    assert server["names"] == ["fleet.example.org"] and ca["names"] == ["Polylink fleet CA"]
    assert server["not_after"] < ca["not_after"]
    monkeypatch.setenv("TLS_DIR", str(data_dir / "elsewhere"))
    assert certs.fleet_certificates(data_dir) == []


@pytest.mark.parametrize("names, words", [
    ([], "at least one name"),
    (["bad name"], "neither an IP address nor a DNS name"),
    (["-x.example"], "neither an IP address nor a DNS name"),
])
def test_bad_names_say_why(tmp_path, names, words):
    with pytest.raises(certs.TLSError, match=words):
        certs.init(tmp_path / "tls", names)
    assert not (tmp_path / "tls" / "server.pem").exists()


def test_renew_keeps_the_ca_and_the_names(tmp_path):
    d = certs.init(tmp_path / "tls", ["fleet.example.org"])
    ca_before = (d / "ca.pem").read_bytes()
    leaf_before = (d / "server.pem").read_bytes()
    certs.renew(d)
    assert (d / "ca.pem").read_bytes() == ca_before, "nodes trust the CA: it must not change"
    assert (d / "server.pem").read_bytes() != leaf_before
    assert certs.certificates(d)[0]["names"] == ["fleet.example.org"]


def test_operator_certificates_are_checked_and_then_not_renewable_here(tmp_path):
    other_ca, other_key = certs.make_ca("City root")
    cert, key = certs.make_server(other_ca, other_key, ["fleet.city.example"])
    stranger, _ = certs.make_ca("Someone else")
    _, wrong_key = certs.make_server(other_ca, other_key, ["x.example"])
    from tls_files import write

    files = write(tmp_path / "given", cert=cert, key=key, wrong_key=wrong_key, ca=other_ca,
                  stranger=stranger)
    d = tmp_path / "tls"
    with pytest.raises(certs.TLSError, match="does not belong to the certificate"):
        certs.use(d, files["cert"], files["wrong_key"], files["ca"])
    with pytest.raises(certs.TLSError, match="is not issued by"):
        certs.use(d, files["cert"], files["key"], files["stranger"])
    with pytest.raises(certs.TLSError, match="cannot read the certificate"):
        certs.use(d, files["key"], files["key"], files["ca"])
    assert not (d / "server.pem").exists(), "a refused certificate must not be installed"
    certs.use(d, files["cert"], files["key"], files["ca"])
    assert (d / "ca.pem").read_bytes() == files["ca"].read_bytes()
    assert certs.certificates(d)[0]["names"] == ["fleet.city.example"]
    with pytest.raises(certs.TLSError, match="no CA key of ours"):
        certs.renew(d)
    with pytest.raises(certs.TLSError, match="certificates the operator gave"):
        certs.init(d, ["fleet.city.example"])


def test_cli_init_show_and_renew_if_due(runner, data_dir):
    r = runner.invoke(cli, ["tls", "show"])
    assert r.exit_code == 1 and "fleet tls init --name" in r.output
    r = runner.invoke(cli, ["tls", "init", "--name", "fleet.example.org", "--days", "20"])
    assert r.exit_code == 0 and "fleet.example.org" in r.output and "RENEW NOW" in r.output
    r = runner.invoke(cli, ["tls", "renew", "--if-due"])
    assert r.exit_code == 0 and "RENEW NOW" not in r.output, r.output
    r = runner.invoke(cli, ["tls", "renew", "--if-due"])
    assert r.output.strip() == "the server certificate is not due for renewal"
    r = runner.invoke(cli, ["tls", "init", "--name", "no good"])
    assert r.exit_code == 1 and "Error: 'no good' is neither" in r.output


def test_a_certificate_due_opens_an_alert_and_a_page_warning_until_renewed(
        settings, db, logged_in):
    d = certs.init(settings.data_dir / "tls", ["fleet.example.org"], days=10)
    assert set(certs.expiring(d)) == {"server"}
    assert "expires in 9 days" in certs.expiring(d)["server"]
    work = upkeep.Upkeep(settings)
    assert work.round(db)["alerts"]["certificate"] == 1
    assert work.round(db)["alerts"]["certificate"] == 0, "one alert, not one per round"
    [alert] = [a for a in alert_store.list_alerts(db) if a["kind"] == "certificate"]
    assert "fleet tls renew" in alert["detail"]
    page = logged_in.get("/alerts/").get_data(as_text=True)
    assert "TLS certificate" in page and "fleet tls renew" in page
    assert 'class="flash tls-expiring"' in page
    certs.renew(d)
    work.round(db)
    assert not [a for a in alert_store.list_alerts(db) if a["kind"] == "certificate"]
    # Expired is said as such.
    assert "expired on" in certs.expiring(d, now=now_plus(400))["server"]
