"""Running nginx for the tests of deploy/nginx/polylink.conf, and an HTTPS client that logs in
from a chosen loopback address (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to lo)."""

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

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "polylink.conf"


def site_config(text: str, fleet_port: int, http_port: int, https_port: int, cert: Path,
                key: Path) -> str:
    """The example site's text with this test's ports and certificate (nothing else changed)."""
    text = text.replace("    listen [::]:80;\n", "").replace("    listen [::]:443 ssl;\n", "")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    text = text.replace("/etc/polylink/web.crt", str(cert)).replace("/etc/polylink/web.key",
                                                                     str(key))
    assert "proxy_pass http://127.0.0.1:8000;" in text
    return text.replace("proxy_pass http://127.0.0.1:8000;",
                        f"proxy_pass http://127.0.0.1:{fleet_port};")


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not found:
        pytest.fail("nginx is not installed; tests/system-packages installs it "
                    "(apt-get install nginx)")
    return found


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
