"""The systemd unit in deploy/systemd (#14): its command lines, started as systemd would with a
temp data directory, bring the fleet up, and SIGTERM stops it cleanly within TimeoutStopSec."""

import queue
import shutil
import stat
import threading
import urllib.request
from pathlib import Path

import psutil
from services import free_port
from systemd_unit import Service, parse_unit

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "polylink.service"
ENV_EXAMPLE = ROOT / "deploy" / "systemd" / "polylink.env"


def lines_of(proc):
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [out.put(line.rstrip("\n")) for line in proc.stdout],
                     daemon=True).start()
    return out


def wait_for(lines: queue.Queue, text: str, seen: list, timeout: float = 60) -> None:
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"never printed {text!r}:\n" + "\n".join(seen)) from None
        seen.append(line)
        if text in line:
            return


def test_the_unit_is_what_the_docs_say():
    unit = parse_unit(UNIT)
    service = unit["Service"]
    assert service["ExecStart"] == ["/opt/polylink/.venv/bin/fleet run"]
    assert service["KillMode"] == ["mixed"]  # fleet run stops its children in order itself
    assert service["User"] == ["polylink"] and service["UMask"] == ["0077"]
    assert service["ReadWritePaths"] == ["/var/lib/polylink"]
    assert "DATA_DIR=/var/lib/polylink/data" in service["Environment"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "deploy/systemd/polylink.service" in (ROOT / "docs" / "operations.md").read_text()


def test_the_unit_starts_the_fleet_and_stops_it_on_sigterm(tmp_path):
    # The unit's paths, moved into tmp_path; /opt/polylink is this checkout.
    etc = tmp_path / "etc" / "polylink"
    etc.mkdir(parents=True)
    data = tmp_path / "var" / "lib" / "polylink"
    data.mkdir(parents=True, mode=0o700)
    port, mqtt_port = free_port(), free_port()
    env_text = ENV_EXAMPLE.read_text().replace("PORT=8000", f"PORT={port}").replace(
        "MQTT_PORT=1883", f"MQTT_PORT={mqtt_port}")
    (etc / "polylink.env").write_text(env_text)
    paths = {"/opt/polylink/.venv/bin/fleet": str(Path(shutil.which("fleet", path=str(
        ROOT / ".venv" / "bin")) or ROOT / ".venv" / "bin" / "fleet")),
        "/etc/polylink": str(etc), "/var/lib/polylink": str(data)}
    service = Service(UNIT, paths)
    proc = service.start()
    lines, seen = lines_of(proc), []
    try:
        wait_for(lines, "Press Ctrl-C to stop.", seen)
        # The journal gets no password: the first admin's is set with `polylink user reset`.
        (first,) = [line for line in seen if line.startswith("First run")]
        assert "password:" not in first and "polylink user reset admin" in first
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/login", timeout=10) as r:
            assert r.status == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("mosquitto" in c.name() for c in children), [c.name() for c in children]
        # UMask=0077 reaches what the service creates.
        assert stat.S_IMODE((data / "data" / "fleet.db").stat().st_mode) == 0o600
        assert service.stop() == 0
        # Nothing it started is left behind (systemd would SIGKILL them: KillMode=mixed).
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.name() for p in alive]
        while not lines.empty():
            seen.append(lines.get())
        assert seen[-1] == "stopped", seen[-5:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
