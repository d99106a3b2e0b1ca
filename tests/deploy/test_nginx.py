"""deploy/nginx/polylink.conf (#14), run in a real nginx in front of a real `fleet run` with
TRUSTED_PROXIES=127.0.0.1: HTTPS, HSTS and Secure cookies through the proxy, and the login limit
keyed on the client address nginx forwards (clients on 127.0.0.2 and 127.0.0.3)."""

import http.client
import subprocess

from nginx_run import SITE, Browser, main_config, nginx_binary, site_config, wait_listening
from selfsigned import make_cert
from services import free_port


def test_the_nginx_example_in_front_of_the_fleet(fleet_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1")
    run = fleet_run()
    run.wait_for("X-Forwarded-* believed from 127.0.0.1/32 only")
    first = run.wait_for("First run: created the user")
    admin_password = first.rsplit(": ", 1)[1].strip()
    run.wait_for("Press Ctrl-C to stop.")

    cert, key = make_cert(tmp_path / "tls")
    folder = tmp_path / "nginx"
    folder.mkdir()
    http_port, https_port = free_port(), free_port()
    site = folder / "polylink.conf"
    site.write_text(site_config(SITE.read_text(), run.port, http_port, https_port, cert, key))
    conf = main_config(folder, site)
    binary = nginx_binary()
    check = subprocess.run([binary, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    nginx = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_listening(https_port, nginx, folder / "error.log")
        attacker = Browser("127.0.0.2", https_port, cert)
        response, page = attacker.request("GET", "/auth/login")
        assert response.status == 200 and "csrf_token" in page
        # The fleet believes nginx's X-Forwarded-Proto: the browser is on HTTPS.
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
        assert "Secure" in response.headers["Set-Cookie"]
        assert "HttpOnly" in response.headers["Set-Cookie"]

        # Plain HTTP is redirected to HTTPS.
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        conn.request("GET", "/nodes/")
        redirect = conn.getresponse()
        assert redirect.status == 301 and redirect.headers["Location"].startswith("https://")
        conn.close()

        # Five wrong passwords from 127.0.0.2 block that address for admin, not admin from
        # 127.0.0.3, though both reach the fleet from nginx's 127.0.0.1.
        for _ in range(5):
            assert attacker.login("admin", "wrong password") == 401
        assert attacker.login("admin", admin_password) == 429
        assert Browser("127.0.0.3", https_port, cert).login("admin", admin_password) == 302
    finally:
        nginx.terminate()
        nginx.wait(15)
    assert run.stop() == 0
