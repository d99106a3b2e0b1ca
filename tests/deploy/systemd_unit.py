"""Start a systemd unit's documented command lines the way systemd would, without systemd.

There is no systemd in the test machines (containers), so this reads the unit file and does
what systemd.exec(5) says for the settings our unit uses: Environment= and EnvironmentFile=
(KEY=VALUE lines, # comments), WorkingDirectory=, UMask=, ExecStartPre= then ExecStart= (each
split like a shell word list, no shell), KillSignal= and TimeoutStopSec= to stop. Paths are
rewritten by a substitution table so the unit's /opt, /etc and /var/lib land in a temp folder.
"""

import os
import shlex
import signal
import subprocess
from pathlib import Path


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}} of a unit file (keys may repeat, as in systemd)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"{path}: not a unit file line: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def substitute(text: str, paths: dict[str, str]) -> str:
    for old, new in paths.items():
        text = text.replace(old, new)
    return text


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


class Service:
    """The unit's [Service] settings with paths substituted; start() and stop() as systemd does."""

    def __init__(self, unit: Path, paths: dict[str, str]):
        self.service = {k: [substitute(v, paths) for v in vs]
                        for k, vs in parse_unit(unit)["Service"].items()}
        self.proc: subprocess.Popen | None = None

    def one(self, key: str, default: str | None = None) -> str | None:
        values = self.service.get(key)
        return values[-1] if values else default

    def environment(self) -> dict[str, str]:
        # systemd starts services with a clean environment: PATH, INVOCATION_ID (a random id
        # of this start, systemd.exec(5)) and little else.
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "INVOCATION_ID": os.urandom(16).hex()}
        for line in self.service.get("Environment", []):
            for word in shlex.split(line):
                key, _, value = word.partition("=")
                env[key] = value
        for name in self.service.get("EnvironmentFile", []):
            optional = name.startswith("-")
            path = Path(name.lstrip("-"))
            if path.exists():
                env.update(read_env_file(path))
            elif not optional:
                raise FileNotFoundError(f"EnvironmentFile {path} is missing; systemd would "
                                        "refuse to start the unit")
        return env

    def _umask(self):
        mask = int(self.one("UMask", "0022"), 8)
        return lambda: os.umask(mask)

    def start(self) -> subprocess.Popen:
        env, cwd = self.environment(), self.one("WorkingDirectory")
        for line in self.service.get("ExecStartPre", []):
            subprocess.run(shlex.split(line), env=env, cwd=cwd, check=True, timeout=120,
                           preexec_fn=self._umask(), capture_output=True)
        self.proc = subprocess.Popen(shlex.split(self.one("ExecStart")), env=env, cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=self._umask())
        return self.proc

    def stop(self) -> int:
        """KillSignal to the main process (KillMode=mixed), wait TimeoutStopSec; the exit code."""
        sig = getattr(signal, self.one("KillSignal", "SIGTERM"))
        timeout = float(self.one("TimeoutStopSec", "90").rstrip("s"))
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # what systemd does after TimeoutStopSec: the test then fails
            self.proc.wait()
            raise
