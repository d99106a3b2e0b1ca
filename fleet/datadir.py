"""The data directory holds secrets (the database with LoRaWAN AppKeys and password hashes, the
session key, the broker's password file, the provider credentials key): this user only.

Directories are made 0700 and files 0600 when created, and tightened when an older version left
them readable by others.
"""

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _tighten(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 & ~mode:
            os.chmod(path, mode)
    except PermissionError:
        pass  # not ours (a shared install): the owner decides


def private_dir(path) -> Path:
    """Create the directory path (parents as they would be) readable by this user only."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)
    return path


def secret_file(path, make) -> bytes:
    """The secret kept in path, made by make() -> bytes on first use: written once, 0600,
    with O_EXCL so two processes starting together cannot each write a different one."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(make())
    return path.read_bytes()


def private_file(path) -> Path:
    """Create path empty if missing, 0600 either way (SQLite's WAL files then take its mode)."""
    path = Path(path)
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)
    return path
