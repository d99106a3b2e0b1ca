"""docs/operations.md, "From an empty Debian server" (#14): every command of the walk-through
(its ```sh walkthrough blocks), in order, in a temporary folder standing in for /.

Commands run as written, with the paths moved under the folder, except these, which a container
cannot do; each is replaced by the nearest thing that proves the step (REPLACED says how):
- `apt-get update` is not run (it would reach Debian's mirrors in every test run);
  `apt-get install PKGS` becomes `dpkg -s PKGS`: the packages must be installed (tests/
  system-packages installs them in CI).
- `useradd ... polylink` is not run: the service's user is the one running the test, so
  `-o polylink -g polylink` and the wrapper's `runuser -u polylink` name that user.
- `git clone URL` clones this checkout (its committed HEAD) instead of the example URL.
- `systemctl daemon-reload` is not run; `systemctl enable --now polylink` starts the installed
  unit's command lines as systemd would (tests/deploy/systemd_unit.py); `systemctl reload nginx`
  starts nginx with the installed site; `nginx -t` tests that site in a minimal nginx.conf.
- `esptool ... write-flash ... IMAGE` (step 8): no board is attached; the image it would write is
  read back and booted in the host port (the real firmware, CPython `ssl`), with
  fleet.example.org resolving to 127.0.0.1, so "the node reports in over TLS" is the real path.
- The prerequisite the text names (a certificate and key in /etc/polylink) is made with a
  self-signed certificate, and the installed settings get free ports instead of 8000/1883/8883,
  and the nginx sites free ports instead of 80/443/8443.
"""

import asyncio
import base64
import grp
import json
import os
import pwd
import re
import shlex
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from nginx_run import Browser, main_config, nginx_binary, site_config, wait_listening
from polylink_host import sim
from selfsigned import make_cert
from services import free_port
from systemd_unit import Service

from provisioning import image

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
FENCE = re.compile(r"^```sh walkthrough\n(.*?)^```", re.S | re.M)
# The folders of a Debian server the walk-through writes to, moved under the test's folder.
# `fleet node show`'s line once the fleet heard from the node ('-' before).
LAST_SEEN = re.compile(r"^last_seen\s+\d{4}-", re.M)
SYSTEM_PATHS = ("/opt/polylink", "/etc/polylink", "/etc/systemd/system", "/usr/local/bin",
                "/var/lib/polylink", "/etc/nginx", "/var/backups/polylink")


def walkthrough_commands() -> list[str]:
    blocks = FENCE.findall(DOC.read_text())
    return [line for block in blocks for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_walkthrough_has_the_steps_the_test_knows():
    commands = walkthrough_commands()
    assert commands[0] == "sudo apt-get update"
    assert any("systemctl enable --now polylink" in c for c in commands)
    assert any(c.startswith("sudo polylink tls init --name ") for c in commands)
    assert any(" write-flash 0x200000 " in c for c in commands)
    assert all(c.startswith("sudo ") for c in commands), "each step is an admin's command"


class Server:
    """The temporary stand-in for the server's file system, and what the walk-through started."""

    def __init__(self, root: Path):
        self.root = root
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.group = grp.getgrgid(os.getgid()).gr_name
        self.paths = {p: str(root / p.lstrip("/")) for p in SYSTEM_PATHS}
        for p in ("/etc/systemd/system", "/usr/local/bin", "/etc/nginx/sites-available",
                  "/etc/nginx/sites-enabled", "/var/lib", "/var/backups"):
            (root / p.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.port, self.mqtt_port = free_port(), free_port()
        self.http_port, self.https_port = free_port(), free_port()
        self.mqtt_tls_port, self.nodes_port = free_port(), free_port()
        self.node: BootedNode | None = None
        self.service: Service | None = None
        self.nginx: subprocess.Popen | None = None
        self.replaced: list[str] = []
        self.outputs: dict[str, str] = {}
        self.fixed: set[Path] = set()

    def moved(self, text: str) -> str:
        for old, new in self.paths.items():
            text = text.replace(old, new)
        return text

    def fix_installed(self) -> None:
        """Paths and ports in files the walk-through installed (the unit, settings, wrapper)."""
        env = self.root / "etc/polylink/polylink.env"
        for path in (self.root / "etc/systemd/system/polylink.service", env,
                     self.root / "usr/local/bin/polylink"):
            if path.exists() and path not in self.fixed:
                self.fixed.add(path)
                text = self.moved(path.read_text()).replace("runuser -u polylink",
                                                            f"runuser -u {self.user}")
                if path == env:
                    text = text.replace("MQTT_PORT=1883", f"MQTT_PORT={self.mqtt_port}")
                    text = text.replace("MQTT_TLS_PORT=8883",
                                        f"MQTT_TLS_PORT={self.mqtt_tls_port}")
                    text = text.replace("fleet.example.org:8443",
                                        f"fleet.example.org:{self.nodes_port}")
                    text = re.sub(r"^PORT=8000$", f"PORT={self.port}", text, flags=re.M)
                    if os.environ.get("DATABASE_URL"):  # --backend=postgresql: the operator's line
                        text += f"DATABASE_URL={os.environ['DATABASE_URL']}\n"
                path.write_text(text)

    def run(self, command: str) -> None:
        assert command.startswith("sudo ")
        line = command[len("sudo "):]
        words = shlex.split(line)
        if line == "apt-get update":
            self.replaced.append(f"{command}: not run")
            return
        if words[:2] == ["apt-get", "install"]:
            packages = [w for w in words[2:] if not w.startswith("-")]
            result = subprocess.run(["dpkg", "-s", *packages], capture_output=True, text=True)
            assert result.returncode == 0, f"{command}: not installed here:\n{result.stderr}"
            self.replaced.append(f"{command}: dpkg -s")
            return
        if words[0] == "useradd":
            assert words[-1] == "polylink"
            self.replaced.append(f"{command}: the test's user stands in")
            return
        if words[:2] == ["systemctl", "daemon-reload"]:
            self.replaced.append(f"{command}: no systemd")
            return
        if words[:2] == ["systemctl", "stop"]:
            assert words[2] == "polylink"
            assert self.service.stop() == 0, "\n".join(self.lines)
            return
        if words[:2] == ["systemctl", "restart"]:
            assert words[2] == "polylink"
            assert self.service.stop() == 0, "\n".join(self.lines)
            words = ["systemctl", "start", "polylink"]
        if words[:3] == ["systemctl", "enable", "--now"] or words[:2] == ["systemctl", "start"]:
            assert words[-1] == "polylink"
            self.service = Service(self.root / "etc/systemd/system/polylink.service", {})
            proc = self.service.start()
            self.lines = []
            for out_line in proc.stdout:
                self.lines.append(out_line.rstrip("\n"))
                if "Press Ctrl-C to stop." in out_line:
                    break
            assert proc.poll() is None, "\n".join(self.lines)
            if not hasattr(self, "first_start_lines"):
                self.first_start_lines = self.lines
            return
        if words[:2] == ["nginx", "-t"]:
            self.nginx_conf = self.nginx_config()
            result = subprocess.run([nginx_binary(), "-t", "-c", str(self.nginx_conf)],
                                    capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            return
        if words[:2] == ["systemctl", "reload"] and words[2] == "nginx":
            if self.nginx is not None:  # a reload: nginx reads the sites again
                self.nginx.terminate()
                self.nginx.wait(15)
            self.nginx = subprocess.Popen([nginx_binary(), "-c", str(self.nginx_conf)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_listening(self.https_port, self.nginx, self.root / "nginx-run" / "error.log")
            return
        if Path(words[0]).name == "esptool" and "write-flash" in words:
            assert words[-2] == "0x200000"  # the vfs partition of boards/ESP32_GENERIC.json
            self.node = BootedNode(Path(self.moved(words[-1])), self.root / "board")
            self.replaced.append(f"{command}: booted in the host port")
            # As on a board: the next step looks once the node has reported in.
            node_id = self.node.config["node"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    self.node.connected() and LAST_SEEN.search(self.polylink("node", "show",
                                                                             node_id))):
                time.sleep(0.5)
            assert self.node.connected(), "the node never connected to the broker over TLS"
            return
        if words[0] == "git" and words[1] == "clone":
            words[2] = str(ROOT)
        if words[0] == "install":
            words = [self.user if w == "polylink" and words[i - 1] == "-o" else
                     self.group if w == "polylink" and words[i - 1] == "-g" else w
                     for i, w in enumerate(words)]
        words = [self.moved(w) for w in words]
        if words[0] == "polylink":
            words[0] = str(self.root / "usr/local/bin/polylink")
        result = subprocess.run(words, capture_output=True, text=True, timeout=300,
                                env=self.admin_env())
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
        self.outputs[command] = result.stdout
        self.fix_installed()

    @staticmethod
    def admin_env() -> dict[str, str]:
        """An admin's shell: none of this test run's fleet settings."""
        return {k: v for k, v in os.environ.items()
                if k not in ("DATA_DIR", "PORT", "MQTT_PORT", "MQTT_URL", "VIRTUAL_ENV")}

    def polylink(self, *args: str) -> str:
        """What `sudo polylink ARGS` prints (the installed wrapper)."""
        result = subprocess.run([str(self.root / "usr/local/bin/polylink"), *args],
                                capture_output=True, text=True, timeout=60, env=self.admin_env())
        return result.stdout

    def nginx_config(self) -> Path:
        site = self.root / "etc/nginx/sites-enabled/polylink"
        assert site.is_symlink()
        text = site_config(site.read_text(), self.port, self.http_port, self.https_port,
                           self.root / "etc/polylink/web.crt", self.root / "etc/polylink/web.key")
        nodes = self.root / "etc/nginx/sites-enabled/polylink-nodes"
        if nodes.exists():
            assert nodes.is_symlink()
            nodes_text = nodes.read_text().replace("    listen [::]:8443 ssl;\n", "")
            assert "listen 8443 ssl;" in nodes_text and "127.0.0.1:8000;" in nodes_text
            text += self.moved(nodes_text.replace(
                "listen 8443 ssl;", f"listen 127.0.0.1:{self.nodes_port} ssl;").replace(
                "127.0.0.1:8000;", f"127.0.0.1:{self.port};"))
        self.site = self.root / "nginx-run" / "polylink.conf"
        self.site.parent.mkdir(exist_ok=True)
        self.site.write_text(text)
        return main_config(self.site.parent, self.site)

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.terminate()
            self.nginx.wait(15)
        if self.service is not None and self.service.proc is not None and \
                self.service.proc.poll() is None:
            self.service.proc.kill()
            self.service.proc.wait()


class BootedNode:
    """The image esptool would write, booted in the host port on a thread until stop()."""

    def __init__(self, image_file: Path, root: Path):
        files = image.read_back(image_file.read_bytes())
        root.mkdir()
        for name in ("board.json", "config.json", "ca.pem"):
            (root / name).write_bytes(files[name])
        self.config = json.loads(files["config.json"])
        self.sim = sim.SimNode(self.config["node"], root)
        self.loop = asyncio.new_event_loop()
        self.task = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.task = self.loop.create_task(self.sim.run())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:  # the node's own tasks (guard, sender) end with it
            left = asyncio.all_tasks(self.loop)
            for task in left:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            self.loop.close()

    def connected(self) -> bool:
        """The node has had an MQTT session with the broker since it booted."""
        node = self.sim.node
        return node is not None and node.link.connects >= 1

    def stop(self):
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(15)


def test_every_command_of_the_walkthrough(tmp_path, monkeypatch):
    # The DNS name of the walk-through (and of the certificate) is this machine.
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **kw: resolve(
        "127.0.0.1" if host == "fleet.example.org" else host, *a, **kw))
    server = Server(tmp_path / "server")
    try:
        for command in walkthrough_commands():
            server.run(command)
            if command.endswith("install -d -m 0755 /etc/polylink"):
                # The prerequisite the text names: the certificate and key for the web UI.
                cert, key = make_cert(tmp_path / "ca")
                (server.root / "etc/polylink/web.crt").write_bytes(cert.read_bytes())
                (server.root / "etc/polylink/web.key").write_bytes(key.read_bytes())
        doctor = next(out for c, out in server.outputs.items() if c.endswith("doctor"))
        assert "no problems" in doctor, doctor
        # What the service printed (the journal) holds no password; step 4's reset gives one.
        assert any("polylink user reset admin" in line for line in server.first_start_lines)
        reset = next(out for c, out in server.outputs.items() if c.endswith("reset admin"))
        password = reset.strip().splitlines()[-1]
        # The result: a browser logs in through nginx over HTTPS with the password of step 4.
        browser = Browser("127.0.0.2", server.https_port, server.root / "etc/polylink/web.crt")
        assert browser.login("admin", password) == 302
        home = server.root / "var/lib/polylink"
        if not os.environ.get("DATABASE_URL"):
            assert (home / "data" / "fleet.db").stat().st_mode & 0o777 == 0o600
        assert home.stat().st_mode & 0o777 == (home / "data").stat().st_mode & 0o777 == 0o700
        # The restore of step 6 kept what it replaced beside DATA_DIR (and step 8's images).
        assert sorted(p.name.split("-")[0] for p in home.iterdir() if p.name != "data") == [
            "build", "data.before"]
        assert "restored" in next(out for c, out in server.outputs.items() if "restore" in c)
        # Step 7: the certificate for the name, served by the broker's TLS listener.
        shown = next(out for c, out in server.outputs.items() if c.endswith("tls show"))
        assert "fleet.example.org" in shown, shown
        ca = home / "data" / "tls" / "ca.pem"
        assert "MQTT over TLS on mqtt+ssl://0.0.0.0:" in "\n".join(server.lines)
        # Step 8: the node's image speaks TLS to the TLS port, and the node reported in over it.
        cfg = server.node.config
        assert cfg["mqtt"]["tls"] == {"ca": "ca.pem"} and cfg["ota"]["ca"] == "ca.pem"
        assert (cfg["mqtt"]["host"], cfg["mqtt"]["port"]) == ("fleet.example.org",
                                                              server.mqtt_tls_port)
        assert server.node.connected()
        assert LAST_SEEN.search(next(out for c, out in server.outputs.items()
                                     if c.endswith("node show lamp-0001")))
        # Its update files come from nginx's nodes site (OTA_URL), with the certificate it
        # trusts, and with its file login only.
        offer = "/ota/v1/nodes/lamp-0001/offer"
        nodes_site = Browser("127.0.0.3", server.nodes_port, ca)
        nodes_site.context.check_hostname = False  # the test connects to 127.0.0.1 ...
        assert_name = ssl.create_default_context(cafile=str(ca))  # ... so check the name here
        with socket.create_connection(("127.0.0.1", server.nodes_port), timeout=10) as raw, \
                assert_name.wrap_socket(raw, server_hostname="fleet.example.org"):
            pass
        assert nodes_site.request("GET", offer)[0].status == 401
        login = base64.b64encode(f"lamp-0001:{cfg['ota']['password']}".encode()).decode()
        answer, _ = nodes_site.request("GET", offer, headers={"Authorization": f"Basic {login}"})
        assert answer.status in (200, 204), answer.status
        assert nodes_site.request("GET", "/auth/login")[0].status == 404
        assert server.service.stop() == 0
    finally:
        server.stop()
    assert len(server.replaced) == 5, server.replaced


if __name__ == "__main__":
    pytest.main([__file__])
