"""HTTPS for the web UI (#14): cookies, HSTS, trusted proxies, the login limit behind a proxy,
and the real HTTPS server with a certificate."""

import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.request

import pytest
from selfsigned import make_cert
from services import free_port

from fleet import create_app
from fleet.settings import SettingsError, WebSettings, web_from_env
from fleet.web.https import HTTPSServer

PROXY = "10.0.0.5"
PROXIED = WebSettings(trusted_proxies=(ipaddress.ip_network(PROXY),))


def make_app(settings, web):
    return create_app({"TESTING": True, "SETTINGS": settings, "SECRET_KEY": "test", "WEB": web})


def csrf(client, **kw) -> str:
    page = client.get("/auth/login", **kw).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client, password, peer, forwarded=None, https=False):
    headers = {}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    if https:
        headers["X-Forwarded-Proto"] = "https"
        # Flask-WTF checks the Referer on HTTPS, as a browser sends it (same-origin policy).
        headers["Referer"] = "https://localhost/auth/login"
    # Plain HTTP between the proxy and us (Flask's test client would default to https here).
    kw = {"environ_base": {"REMOTE_ADDR": peer}, "headers": headers, "base_url": "http://localhost"}
    token = csrf(client, **kw)
    return client.post("/auth/login", data={"username": "alice", "password": password,
                                            "csrf_token": token}, **kw)


def cookie_attributes(response) -> str:
    (session_cookie,) = [c for c in response.headers.getlist("Set-Cookie")
                         if c.startswith("session=")]
    return session_cookie


def test_plain_loopback_cookies_are_httponly_and_samesite_but_not_secure(client):
    attrs = cookie_attributes(client.get("/auth/login"))
    assert "HttpOnly" in attrs and "SameSite=Lax" in attrs
    # Served over plain http://127.0.0.1 (make run): a Secure cookie would never come back.
    assert "Secure" not in attrs


def test_https_cookies_are_secure_httponly_samesite(settings):
    web = WebSettings(tls_cert=settings.data_dir / "c.pem", tls_key=settings.data_dir / "k.pem")
    attrs = cookie_attributes(make_app(settings, web).test_client().get(
        "/auth/login", base_url="https://localhost"))
    assert "Secure" in attrs and "HttpOnly" in attrs and "SameSite=Lax" in attrs


def test_hsts_only_over_https(settings):
    client = make_app(settings, WebSettings()).test_client()
    assert "Strict-Transport-Security" not in client.get("/auth/login").headers
    r = client.get("/auth/login", base_url="https://localhost")
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_forwarded_proto_believed_only_from_a_trusted_proxy(settings):
    app = make_app(settings, PROXIED)
    kw = {"headers": {"X-Forwarded-Proto": "https"}, "base_url": "http://localhost"}
    r = app.test_client().get("/auth/login", environ_base={"REMOTE_ADDR": "203.0.113.9"}, **kw)
    assert "Strict-Transport-Security" not in r.headers
    r = app.test_client().get("/auth/login", environ_base={"REMOTE_ADDR": PROXY}, **kw)
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Secure" in cookie_attributes(r)


def test_behind_a_trusted_proxy_the_attacker_does_not_lock_out_the_user(settings, db, user):
    app = make_app(settings, PROXIED)
    attacker, alice = app.test_client(), app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert login(attacker, "guess", PROXY, "203.0.113.9", https=True).status_code == 401
    assert login(attacker, "correct horse", PROXY, "203.0.113.9", https=True).status_code == 429
    # Same proxy, another client address: the real user logs in.
    assert login(alice, "correct horse", PROXY, "198.51.100.7", https=True).status_code == 302


def test_the_proxy_appends_the_client_so_a_forged_first_entry_is_ignored(settings, db, user):
    app = make_app(settings, PROXIED)
    attacker = app.test_client()
    for i in range(app.config["LOGIN_MAX_FAILURES"]):
        # The attacker writes its own X-Forwarded-For; the proxy appends the real address.
        r = login(attacker, "guess", PROXY, f"192.0.2.{i}, 203.0.113.9", https=True)
        assert r.status_code == 401
    r = login(attacker, "correct horse", PROXY, "192.0.2.99, 203.0.113.9", https=True)
    assert r.status_code == 429


def test_an_untrusted_peer_cannot_choose_its_address_with_forwarded_for(settings, db, user):
    app = make_app(settings, PROXIED)
    attacker = app.test_client()
    for i in range(app.config["LOGIN_MAX_FAILURES"]):
        assert login(attacker, "guess", "203.0.113.9", f"192.0.2.{i}").status_code == 401
    # Not from the proxy: X-Forwarded-For is ignored, every failure counted on the real peer.
    assert login(attacker, "correct horse", "203.0.113.9", "192.0.2.200").status_code == 429


def test_without_trusted_proxies_forwarded_for_is_ignored(app, user):
    attacker = app.test_client()
    for i in range(app.config["LOGIN_MAX_FAILURES"]):
        assert login(attacker, "guess", "127.0.0.1", f"192.0.2.{i}").status_code == 401
    assert login(attacker, "correct horse", "127.0.0.1", "192.0.2.200").status_code == 429


@pytest.mark.parametrize("env, message", [
    ({"WEB_HOST": "0.0.0.0"}, "not a loopback address"),
    ({"WEB_TLS_CERT": "/etc/hostname"}, "go together"),
    ({"WEB_TLS_CERT": "/nope.crt", "WEB_TLS_KEY": "/nope.key"}, "no such file"),
    ({"TRUSTED_PROXIES": "127.0.0.1,proxy.example"}, "'proxy.example' is not an IP address"),
])
def test_bad_web_settings_are_refused_with_the_reason(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        web_from_env()


def test_web_settings_from_env(monkeypatch, tmp_path):
    cert, key = make_cert(tmp_path)
    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("WEB_TLS_CERT", str(cert))
    monkeypatch.setenv("WEB_TLS_KEY", str(key))
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/24")
    web = web_from_env()
    assert web.https and web.host == "0.0.0.0" and web.tls_cert == cert
    assert ipaddress.ip_address("10.0.0.77") in web.trusted_proxies[1]


def test_a_key_that_does_not_match_the_certificate_is_refused(settings, tmp_path):
    cert, _ = make_cert(tmp_path / "a")
    _, other_key = make_cert(tmp_path / "b")
    web = WebSettings(tls_cert=cert, tls_key=other_key)
    with pytest.raises(SettingsError, match="cannot use WEB_TLS_CERT"):
        HTTPSServer(make_app(settings, web), web, free_port())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_the_https_server_serves_the_ui_over_tls_only(settings, tmp_path):
    cert, key = make_cert(tmp_path)
    web = WebSettings(tls_cert=cert, tls_key=key)
    port = free_port()
    server = HTTPSServer(make_app(settings, web), web, port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://localhost:{port}/auth/login", context=context,
                                    timeout=10) as r:
            assert r.status == 200
            assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert "Secure" in r.headers["Set-Cookie"]
        # A client that does not trust this certificate refuses it.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://localhost:{port}/auth/login", timeout=10,
                                   context=ssl.create_default_context())
        # Plain HTTP on the TLS port gets no page.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /auth/login HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                answer = sock.recv(65536)
            except ConnectionResetError:
                answer = b""
        # cheroot answers 400 in plain text or drops the connection, never with a page.
        assert b"csrf_token" not in answer and b" 200 " not in answer
        # TLS 1.1 and older are refused.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(cert))
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, OSError)):
            urllib.request.urlopen(f"https://localhost:{port}/auth/login", context=old,
                                   timeout=10)
    finally:
        server.server.stop()
        thread.join(10)


def test_fleet_run_serves_https_with_the_configured_certificate(fleet_run, tmp_path, monkeypatch):
    cert, key = make_cert(tmp_path / "tls")
    monkeypatch.setenv("WEB_TLS_CERT", str(cert))
    monkeypatch.setenv("WEB_TLS_KEY", str(key))
    run = fleet_run()
    line = run.wait_for("web UI and API")
    assert f"https://127.0.0.1:{run.port}" in line
    run.wait_for("Press Ctrl-C to stop.")
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(f"https://127.0.0.1:{run.port}/auth/login", context=context,
                                timeout=10) as r:
        assert r.status == 200 and "Secure" in r.headers["Set-Cookie"]
    assert run.stop() == 0
    assert "stopped" in run.output()


def test_forwarded_headers_from_an_untrusted_peer_never_reach_a_view(settings):
    app = make_app(settings, PROXIED)

    @app.get("/probe-forwarded")
    def probe():
        from flask import request
        return {"for": request.headers.get("X-Forwarded-For"), "addr": request.remote_addr}

    headers = {"X-Forwarded-For": "192.0.2.1", "Forwarded": "for=192.0.2.1"}
    seen = app.test_client().get("/probe-forwarded", headers=headers,
                                 environ_base={"REMOTE_ADDR": "203.0.113.9"}).get_json()
    assert seen == {"for": None, "addr": "203.0.113.9"}
    seen = app.test_client().get("/probe-forwarded", headers=headers,
                                 environ_base={"REMOTE_ADDR": PROXY}).get_json()
    assert seen["addr"] == "192.0.2.1"


def served_serial(port: int, cafile) -> int:
    """The serial number of the certificate a new TLS handshake on port gets."""
    from cryptography import x509

    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_the_https_server_serves_a_renewed_certificate_without_a_restart(settings, tmp_path,
                                                                        monkeypatch):
    from cryptography import x509

    from fleet.web import https

    monkeypatch.setattr(https, "RELOAD_CHECK_S", 0.2)
    cert, key = make_cert(tmp_path / "live")
    # Both certificates go in the client's trust store: each is self-signed (a subject of its
    # own, or OpenSSL would look up the wrong one), each for 127.0.0.1 too.
    new_cert, new_key = make_cert(tmp_path / "renewed", name="fleet.example.org")
    (tmp_path / "trust.pem").write_bytes(cert.read_bytes() + new_cert.read_bytes())
    trust = tmp_path / "trust.pem"
    old_serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    new_serial = x509.load_pem_x509_certificate(new_cert.read_bytes()).serial_number
    web = WebSettings(tls_cert=cert, tls_key=key)
    port = free_port()
    server = HTTPSServer(make_app(settings, web), web, port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def serial_after_check():
        time.sleep(0.3)
        return served_serial(port, trust)

    try:
        assert served_serial(port, trust) == old_serial
        # Half-way through a renewal: the new certificate, the old key. The pair does not load,
        # so the server keeps the certificate that works.
        cert.write_bytes(new_cert.read_bytes())
        assert serial_after_check() == old_serial
        assert serial_after_check() == old_serial  # and keeps trying, without failing a handshake
        key.write_bytes(new_key.read_bytes())
        assert serial_after_check() == new_serial
        # A page still comes, over the new certificate.
        context = ssl.create_default_context(cafile=str(trust))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/auth/login", context=context,
                                    timeout=10) as r:
            assert r.status == 200
    finally:
        server.server.stop()
        thread.join(10)
