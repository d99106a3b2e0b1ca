"""deploy/nginx/polylink.conf (#14), run in a real nginx in front of a real `fleet run` with
TRUSTED_PROXIES=127.0.0.1: HTTPS, HSTS and Secure cookies through the proxy, and the login limit
keyed on the client address nginx forwards (clients on 127.0.0.2 and 127.0.0.3)."""

import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selfsigned import make_cert
from services import free_port

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "polylink.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not found:
        pytest.fail("nginx is not installed; tests/system-packages installs it "
                    "(apt-get install nginx)")
    return found


def site_config(fleet_port: int, http_port: int, https_port: int, cert: Path, key: Path) -> str:
    """The example site with this test's ports and certificate (nothing else changed)."""
    text = SITE.read_text()
    text = text.replace("    listen [::]:80;\n", "").replace("    listen [::]:443 ssl;\n", "")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    text = text.replace("/etc/polylink/web.crt", str(cert)).replace("/etc/polylink/web.key",
                                                                     str(key))
    assert "proxy_pass http://127.0.0.1:8000;" in text
    return text.replace("proxy_pass http://127.0.0.1:8000;",
                        f"proxy_pass http://127.0.0.1:{fleet_port};")


def main_config(folder: Path, site: Path) -> Path:
    """A minimal nginx.conf around the site, with every path of nginx's own in folder."""
    conf = folder / "nginx.conf"
    temp = "".join(f"    {name}_temp_path {folder / name};\n"
                   for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, nginx's workers would switch to `nobody`, who cannot enter pytest's 0700 folders.
    user = "user root;\n" if os.getuid() == 0 else ""
    conf.write_text(f"{user}daemon off;\npid {folder / 'nginx.pid'};\n"
                    f"error_log {folder / 'error.log'};\nevents {{}}\nhttp {{\n"
                    f"    access_log {folder / 'access.log'};\n{temp}    include {site};\n}}\n")
    return conf


def wait_listening(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nginx does not listen on {port}:\n" + (log.read_text() if log.exists() else ""))


class Browser:
    """An HTTPS client from one loopback address, keeping its session cookie."""

    def __init__(self, source: str, port: int, cafile: Path):
        self.source, self.port, self.cookie = source, port, None
        self.context = ssl.create_default_context(cafile=str(cafile))

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=15,
                                           source_address=(self.source, 0), context=self.context)
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            data = response.read().decode()
        finally:
            conn.close()
        for value in response.headers.get_all("Set-Cookie") or []:
            if value.startswith("session="):
                self.cookie = value.split(";")[0]
        return response, data

    def login(self, user: str, password: str) -> int:
        _, page = self.request("GET", "/auth/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response, _ = self.request(
            "POST", "/auth/login",
            urlencode({"username": user, "password": password, "csrf_token": token}),
            {"Content-Type": "application/x-www-form-urlencoded",
             "Referer": f"https://127.0.0.1:{self.port}/auth/login"})
        return response.status


def test_the_nginx_example_in_front_of_the_fleet(fleet_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1")
    run = fleet_run()
    first = run.wait_for("First run: created the user")
    admin_password = first.rsplit(": ", 1)[1].strip()
    run.wait_for("Press Ctrl-C to stop.")

    cert, key = make_cert(tmp_path / "tls")
    folder = tmp_path / "nginx"
    folder.mkdir()
    http_port, https_port = free_port(), free_port()
    site = folder / "polylink.conf"
    site.write_text(site_config(run.port, http_port, https_port, cert, key))
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
