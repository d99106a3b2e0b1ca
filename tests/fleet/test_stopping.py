"""Workers stop within their grace time, and by themselves when `fleet run` is gone (#19)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fleet.stopping import GRACE, PARENT_ENV, PARENT_POLL, STUCK_EXIT


def _state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state[0] != "Z"  # a zombie has exited, it waits to be reaped


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = _state(int(entry.name))
            if state is not None and state[1] == pid:
                found.append(int(entry.name))
    return found


def _wait_gone(pids, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def test_no_child_outlives_a_killed_fleet_run(fleet_run):
    run = fleet_run()
    run.wait_for("Press Ctrl-C to stop.", timeout=60)
    children = _children(run.proc.pid)
    commands = " | ".join(_command(p) for p in children)
    for part in ("mosquitto", "ingest", "provider ingest", "upkeep --broker-sync"):
        assert part in commands, commands
    run.proc.kill()
    run.proc.wait()
    left = _wait_gone(children, GRACE + 5)
    assert not left, "still running: " + " | ".join(_command(p) for p in left)


def _orphan(tmp_path, args: list[str]) -> int:
    """Start `fleet ARGS` from a process that then exits at once, as a worker whose parent-death
    signal was lost would be; return the worker's pid."""
    launcher = textwrap.dedent(f"""
        import os, subprocess, sys
        env = dict(os.environ, {PARENT_ENV}=str(os.getpid()))
        p = subprocess.Popen([sys.executable, "-m", "fleet.cli", *{args!r}], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        print(p.pid, flush=True)
    """)
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), MQTT_PORT="1")
    out = subprocess.run([sys.executable, "-c", launcher], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    return int(out.stdout.strip())


def test_a_worker_whose_fleet_is_gone_exits_by_itself(tmp_path):
    pids = [_orphan(tmp_path, ["upkeep", "--broker-sync"]), _orphan(tmp_path, ["ingest"]),
            _orphan(tmp_path, ["provider", "ingest"])]
    try:
        left = _wait_gone(pids, PARENT_POLL + GRACE)
        assert not left, "still running: " + " | ".join(_command(p) for p in left)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _script(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_signal_while_the_main_thread_holds_the_events_lock_still_stops_it():
    """What kept `fleet upkeep` in a futex wait: the handler ran inside Event.wait's lock."""
    proc = _script("""
        import os, signal
        from fleet.stopping import Stopping
        s = Stopping().install()
        with s.event._cond:  # where Event.wait() holds it when a signal's handler runs
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100000):
                pass  # the handler runs between these bytecodes
        print("stopped" if s.wait(10) else "not stopped", flush=True)
    """)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "stopped", err


def test_a_stuck_worker_exits_after_its_grace_time():
    proc = _script("""
        import time
        from fleet.stopping import Stopping
        Stopping(grace=0.5).install()
        print("ready", flush=True)
        time.sleep(60)  # stuck: never looks at the stop request
    """)
    assert proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == STUCK_EXIT
    assert time.monotonic() - started < 5
    assert "exiting now" in proc.stderr.read()
