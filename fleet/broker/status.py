"""What `fleet run` knows about the broker it started: up, or down and being restarted.

A file in the broker directory, not memory: the web pages (in this or any other process) read it.
No file means no broker of ours (an external MQTT_URL): nothing to say.
"""

import json
import os
import time
from pathlib import Path

FILE = "status.json"


def write(broker_dir: Path, state: str, **facts) -> None:
    """Record state ("up" | "down") with facts (exit code, restarts, next try) atomically."""
    path = Path(broker_dir) / FILE
    tmp = path.with_name(f"{FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"state": state, "at": time.time(), **facts}))
    os.replace(tmp, path)


def read(broker_dir: Path) -> dict | None:
    """The last state recorded, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(broker_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None


def clear(broker_dir: Path) -> None:
    """Forget the state: the broker was stopped on purpose."""
    (Path(broker_dir) / FILE).unlink(missing_ok=True)
