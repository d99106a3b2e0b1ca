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
- The prerequisite the text names (a certificate and key in /etc/polylink) is made with a
  self-signed certificate, and the installed settings get free ports instead of 8000/1883, and
  the nginx site free ports instead of 80/443.
"""

import grp
import os
import pwd
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from nginx_run import Browser, main_config, nginx_binary, site_config, wait_listening
from selfsigned import make_cert
from services import free_port
from systemd_unit import Service

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
FENCE = re.compile(r"^```sh walkthrough\n(.*?)^```", re.S | re.M)
# The folders of a Debian server the walk-through writes to, moved under the test's folder.
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
            self.nginx = subprocess.Popen([nginx_binary(), "-c", str(self.nginx_conf)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_listening(self.https_port, self.nginx, self.root / "nginx-run" / "error.log")
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
                                env={k: v for k, v in os.environ.items()
                                     if k not in ("DATA_DIR", "PORT", "MQTT_PORT", "MQTT_URL",
                                                  "VIRTUAL_ENV")})
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
        self.outputs[command] = result.stdout
        self.fix_installed()

    def nginx_config(self) -> Path:
        site = self.root / "etc/nginx/sites-enabled/polylink"
        assert site.is_symlink()
        text = site_config(site.read_text(), self.port, self.http_port, self.https_port,
                           self.root / "etc/polylink/web.crt", self.root / "etc/polylink/web.key")
        self.site = self.root / "nginx-run" / "polylink.conf"
        self.site.parent.mkdir(exist_ok=True)
        self.site.write_text(text)
        return main_config(self.site.parent, self.site)

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.terminate()
            self.nginx.wait(15)
        if self.service is not None and self.service.proc is not None and \
                self.service.proc.poll() is None:
            self.service.proc.kill()
            self.service.proc.wait()


def test_every_command_of_the_walkthrough(tmp_path):
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
        # The restore of step 6 kept what it replaced beside DATA_DIR.
        assert [p.name.split("-")[0] for p in home.iterdir() if p.name != "data"] == [
            "data.before"]
        assert "restored" in next(out for c, out in server.outputs.items() if "restore" in c)
        assert server.service.stop() == 0
    finally:
        server.stop()
    assert len(server.replaced) == 4, server.replaced


if __name__ == "__main__":
    pytest.main([__file__])
