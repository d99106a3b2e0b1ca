"""How a worker process stops: on SIGTERM or SIGINT, or by itself when its `fleet run` is gone.

Three things kept `fleet upkeep --broker-sync` alive after its fleet had stopped:
- The signal handler called Event.set(). Python runs handlers in the main thread between
  bytecodes, possibly while that thread holds the same event's (non-reentrant) lock inside
  Event.wait(): the handler then waits for itself for ever (a futex wait). Here the handler only
  starts a thread that sets the event, which waits its turn for the lock instead.
- The parent-death signal (PR_SET_PDEATHSIG, broker/server.py) is lost when the parent dies
  before the child sets it, and is never sent to a worker started some other way. A watcher
  thread notices the parent pid `fleet run` gave (POLYLINK_PARENT_PID) is no longer its parent.
- A worker stuck in a call that never returns (a hung socket, a lock) ignores any flag: past its
  grace time it exits anyway with code 3.
"""

import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

PARENT_ENV = "POLYLINK_PARENT_PID"
# `fleet run` waits 20 s for a worker before SIGKILL (serve.Ingest): a worker gives itself less.
GRACE = 15.0
PARENT_POLL = 1.0
STUCK_EXIT = 3


class Stopping:
    """A stop request for this process; event is set once one came, on_stop() is called once."""

    def __init__(self, on_stop=None, grace: float = GRACE):
        self.event = threading.Event()
        self.on_stop = on_stop
        self.grace = grace
        self.why: str | None = None
        self._lock = threading.Lock()

    def install(self, parent_pid: int | None = None) -> "Stopping":
        """Handle SIGTERM and SIGINT; watch the parent given (else POLYLINK_PARENT_PID)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if parent_pid is None:
            raw = os.environ.get(PARENT_ENV, "")
            parent_pid = int(raw) if raw.isdigit() else None
        if parent_pid:
            threading.Thread(target=self._watch_parent, args=(parent_pid,), name="parent-watch",
                             daemon=True).start()
        return self

    def _on_signal(self, signum, frame):
        # No lock may be taken here (see the module's docstring): a thread does the work.
        threading.Thread(target=self.request, args=(signal.Signals(signum).name,),
                         daemon=True).start()

    def _watch_parent(self, parent_pid: int) -> None:
        while not self.event.wait(PARENT_POLL):
            if os.getppid() != parent_pid:
                self.request(f"parent process {parent_pid} is gone")
                return

    def request(self, why: str) -> None:
        """Ask the process to stop (once); it has `grace` seconds before it is made to."""
        with self._lock:
            if self.why is not None:
                return
            self.why = why
        print(f"stopping: {why}", file=sys.stderr, flush=True)
        self.event.set()
        timer = threading.Timer(self.grace, self._overdue)
        timer.daemon = True
        timer.start()
        if self.on_stop is not None:
            self.on_stop()

    def _overdue(self) -> None:
        print(f"still running {self.grace:g} s after `{self.why}`: exiting now",
              file=sys.stderr, flush=True)
        os._exit(STUCK_EXIT)

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)
