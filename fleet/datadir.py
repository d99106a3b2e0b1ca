"""The data directory holds secrets (the database with LoRaWAN AppKeys and password hashes, the
session key, the broker's password file, the provider credentials key): this user only.

Directories are made 0700 and files 0600 when created, and tightened when an older version left
them readable by others.
"""

import os
import stat
import tempfile
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _tighten(path: Path, mode: int) -> None:
    try:
        st_mode = path.stat().st_mode
        if stat.S_ISDIR(st_mode) and st_mode & stat.S_ISVTX:
            return  # a shared folder such as /tmp (DATA_DIR=/tmp/x): tightening it breaks others
        if st_mode & 0o777 & ~mode:
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
    """The secret kept in path, made by make() -> bytes on first use: written once, 0600.

    Written whole into a private temporary file first and then linked to path, which fails if
    path exists: two processes starting together never each keep a different secret, and
    neither reads the other's half-written (empty) file (two web processes once started with
    an empty session key that way)."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600
            f.write(make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: its secret is the one
    finally:
        os.unlink(tmp)
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
