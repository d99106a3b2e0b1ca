"""`fleet backup` and `fleet restore`: the whole fleet state in one file, and back.

A backup is a gzipped tar: first a manifest (format version, schema version, which database,
every file's size, mode and SHA-256), then DATA_DIR's files under data/. The database comes from
SQLite's online backup API (fleet/store/snapshot.py) as data/fleet.db, or with DATABASE_URL from
the real pg_dump (fleet/store/pgdump.py) as data/fleet.pgdump, so a backup taken while the fleet
runs is consistent on both. Every
other file of DATA_DIR comes along as it is (the broker's password and ACL files, the service
passwords, the session key, OTA signing keys and release files, certificates), except what the
fleet writes anew at every start or only for the moment (SKIPPED below), so whatever a feature adds
to DATA_DIR later is backed up without touching this file.

A restore unpacks into a new folder beside DATA_DIR, checks every file against the manifest and
the database's integrity, and only then swaps the folder in (a rename): a bad archive leaves
DATA_DIR exactly as it was. On PostgreSQL the dump must also read as one (pg_restore --list), and
it replaces the store's tables in one transaction before the folder is swapped in; the database's
previous contents are dumped first and kept with DATA_DIR's (DATA_DIR.before-restore-<time>).
"""

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath

import psutil

from fleet.datadir import PRIVATE_DIR, PRIVATE_FILE, private_dir
from fleet.settings import Settings
from fleet.store import pgdump, snapshot
from fleet.store.base import describe
from fleet.store.migrate import SCHEMA_VERSION

FORMAT = "polylink-backup"
FORMAT_VERSION = 1
MANIFEST = "polylink-backup.json"
DB_NAME = "fleet.db"
PG_DUMP = "fleet.pgdump"  # pg_dump's custom format: compressed, read back by pg_restore
SQLITE, POSTGRESQL = "sqlite", "postgresql"
DB_FILES = {SQLITE: DB_NAME, POSTGRESQL: PG_DUMP}
# Relative to DATA_DIR: regenerated at start (mosquitto.conf, port), state of running processes
# (pid files, status.json), logs and caches; the database itself is added through SQLite.
SKIPPED = {"fleet.db", "fleet.db-wal", "fleet.db-shm", "fleet.db-journal", "logs", "mip-cache",
           "broker/mosquitto.conf", "broker/port", "broker/status.json", "broker/broker.pid",
           "broker/mosquitto.log"}
SKIPPED_SUFFIXES = (".tmp", ".out", ".new")
_CHUNK = 1 << 16


class BackupError(Exception):
    """A backup cannot be made, or a file is not a backup this fleet can restore."""


def skipped(rel: PurePosixPath) -> bool:
    return (str(rel) in SKIPPED or rel.name.endswith(SKIPPED_SUFFIXES)
            or any(str(p) in SKIPPED for p in rel.parents if str(p) != "."))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entries(data_dir: Path):
    """(relative path, absolute path) of the directories and regular files to back up."""
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        base = Path(root)
        for name in sorted(dirs) + sorted(files):
            path = base / name
            rel = PurePosixPath(path.relative_to(data_dir).as_posix())
            if skipped(rel) or path.is_symlink():
                if name in dirs:
                    dirs.remove(name)
                continue
            if path.is_dir() or path.is_file():
                yield rel, path


def default_name() -> str:
    return time.strftime("polylink-backup-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime())


def _kind(settings: Settings) -> str:
    return POSTGRESQL if settings.database_url else SQLITE


def create(settings: Settings, dest: Path) -> dict:
    """Write a backup of settings.data_dir to dest (mode 0600, atomically); return its manifest."""
    data_dir, kind = settings.data_dir, _kind(settings)
    if kind == SQLITE and not settings.db_path.is_file():
        raise BackupError(f"no fleet database in {data_dir}: is DATA_DIR right?")
    dest = Path(dest)
    if dest.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(f"{dest} is inside DATA_DIR: a backup must live elsewhere")
    with tempfile.TemporaryDirectory(prefix="polylink-backup-") as work:
        db_name = DB_FILES[kind]
        db_copy = Path(work) / db_name
        try:
            if kind == POSTGRESQL:
                schema = pgdump.dump(settings.database_url, db_copy)
            else:
                schema = snapshot.copy_database(settings.db_path, db_copy)
        except (pgdump.DumpError, snapshot.SnapshotError) as e:
            raise BackupError(str(e)) from None
        files: dict[str, dict] = {db_name: {"size": db_copy.stat().st_size, "mode": PRIVATE_FILE,
                                            "sha256": _sha256(db_copy)}}
        dirs: dict[str, int] = {}
        sources = {db_name: db_copy}
        for rel, path in _entries(data_dir):
            st = path.stat()
            if path.is_dir():
                dirs[str(rel)] = st.st_mode & 0o777
                continue
            # Copied first, then hashed and packed from the copy: the manifest and the archive
            # then hold the same bytes even if the fleet rewrites the file meanwhile (it replaces
            # files by renaming a new one in, so the copy is one whole version).
            copy = Path(work) / "files" / str(rel)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            files[str(rel)] = {"size": copy.stat().st_size, "mode": st.st_mode & 0o777,
                               "sha256": _sha256(copy)}
            sources[str(rel)] = copy
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "schema": schema,
                    "database": kind, "created": time.time(), "dirs": dirs, "files": files}
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode(), PRIVATE_FILE)
                for rel, mode in dirs.items():
                    info = tarfile.TarInfo("data/" + rel)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
                    tar.addfile(info)
                for rel, meta in files.items():
                    info = tarfile.TarInfo("data/" + rel)
                    info.size, info.mode, info.mtime = meta["size"], meta["mode"], int(time.time())
                    with open(sources[rel], "rb") as f:
                        tar.addfile(info, f)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return manifest


def _add_bytes(tar, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def fleet_processes(data_dir: Path) -> list[str]:
    """The processes that hold this DATA_DIR's database open (a running fleet), as 'pid name'."""
    db = str((data_dir / DB_NAME).resolve())
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if any(f.path in (db, db + "-wal") for f in proc.open_files()):
                found.append(f"{proc.info['pid']} {proc.info['name']}")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def read_manifest(tar: tarfile.TarFile) -> dict:
    """The manifest of an open backup, checked to be one this fleet can restore."""
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise BackupError("not a Polylink backup: it does not start with " + MANIFEST)
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except ValueError:
        raise BackupError("not a Polylink backup: its manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("not a Polylink backup: the manifest names another format")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(f"the backup is in format {version}, made by a newer Polylink; this "
                          f"one reads format {FORMAT_VERSION}: upgrade the fleet first")
    schema = manifest.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise BackupError(f"the backup's database has schema version {schema}, newer than this "
                          f"fleet's {SCHEMA_VERSION}: upgrade the fleet first, then restore")
    # Backups of format 1 made before PostgreSQL was supported name no database: SQLite's.
    kind = manifest.setdefault("database", SQLITE)
    if (kind not in DB_FILES or not isinstance(manifest.get("files"), dict)
            or DB_FILES[kind] not in manifest["files"]):
        raise BackupError("not a Polylink backup: the manifest lists no database")
    return manifest


def _safe_rel(name: str) -> PurePosixPath:
    """data/<relative path> of an archive member, refused if it would land outside DATA_DIR."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or path.parts[:1] != ("data",) or len(
            path.parts) < 2:
        raise BackupError(f"the backup holds a file outside the data directory: {name!r}")
    return PurePosixPath(*path.parts[1:])


def _unpack(tar: tarfile.TarFile, manifest: dict, into: Path) -> None:
    """Extract every member into the folder into, checking it against the manifest."""
    files, seen = manifest["files"], set()
    for member in tar:
        if member.offset == 0:
            continue  # the manifest, read already (iterating a tar starts again from the top)
        rel = _safe_rel(member.name)
        target = into / rel
        if member.isdir():
            private_dir(target)
            continue
        if not member.isfile() or str(rel) not in files:
            raise BackupError(f"the backup holds {member.name!r}, which its manifest does not "
                              "list (or which is not a plain file)")
        meta = files[str(rel)]
        private_dir(target.parent)
        digest = hashlib.sha256()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as out, tar.extractfile(member) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != meta.get("sha256"):
            raise BackupError(f"{rel} in the backup is damaged (its SHA-256 differs from the "
                              "manifest's)")
        # The permission bits as they were (no set-uid or sticky bits from an archive).
        os.chmod(target, int(meta.get("mode", PRIVATE_FILE)) & 0o777)
        seen.add(str(rel))
    missing = set(files) - seen
    if missing:
        raise BackupError(f"the backup is incomplete: {', '.join(sorted(missing))} missing")
    for rel, mode in manifest.get("dirs", {}).items():
        directory = into / _safe_rel("data/" + rel)
        private_dir(directory)
        os.chmod(directory, int(mode) & 0o777)


def _refuse_running(settings: Settings) -> None:
    data_dir = settings.data_dir
    running = fleet_processes(data_dir)
    if running:
        raise BackupError(f"a fleet is running on {data_dir} (processes {', '.join(running)}): "
                          "stop it first (systemctl stop polylink, or Ctrl-C `fleet run`)")
    if settings.database_url:
        sessions = pgdump.other_sessions(settings.database_url)
        if sessions:
            raise BackupError(
                f"{describe(settings.database_url)} is in use ({len(sessions)} other session(s):"
                f" {', '.join(sessions)}): stop every fleet process on it first")


def restore(settings: Settings, archive: Path, replace: bool = False) -> dict:
    """Restore the backup into settings.data_dir (and DATABASE_URL's database), all or nothing;
    return its manifest.

    A DATA_DIR (or database) that holds anything is refused unless replace, and then kept beside
    it as DATA_DIR.before-restore-<time> (the database as a dump in it). A running fleet on
    DATA_DIR or the database is always refused.
    """
    data_dir, kind = settings.data_dir, _kind(settings)
    try:
        _refuse_running(settings)
        db_occupied = kind == POSTGRESQL and pgdump.holds_tables(settings.database_url)
    except pgdump.DumpError as e:
        raise BackupError(str(e)) from None
    occupied = data_dir.exists() and any(data_dir.iterdir())
    if (occupied or db_occupied) and not replace:
        what = data_dir if occupied else describe(settings.database_url)
        raise BackupError(f"{what} is not empty: pass --replace to restore over it (the "
                          "current contents are kept beside it, not deleted)")
    # The parent is not ours to tighten (DATA_DIR=/var/lib/polylink: /var/lib); the staging
    # folder mkdtemp makes is 0700 already.
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=data_dir.parent))
    old_dump = None
    try:
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                manifest = read_manifest(tar)
                if manifest["database"] != kind:
                    raise BackupError(_other_kind(manifest["database"]))
                _unpack(tar, manifest, staging)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise BackupError(f"{archive} is not a readable Polylink backup: {e}") from None
        try:
            if kind == POSTGRESQL:
                pgdump.check_dump(staging / PG_DUMP)
                if db_occupied:
                    old_dump = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-db-",
                                                     dir=data_dir.parent)) / PG_DUMP
                    pgdump.dump(settings.database_url, old_dump)
                # One transaction: the old tables stay unless every statement of the dump ran.
                schema = pgdump.restore(settings.database_url, staging / PG_DUMP)
                (staging / PG_DUMP).unlink()  # the database holds it now, not DATA_DIR
            else:
                schema = snapshot.check_database(staging / DB_NAME)
        except (snapshot.SnapshotError, pgdump.DumpError) as e:
            raise BackupError(str(e)) from None
        if schema != manifest["schema"]:
            raise BackupError(f"the backup's database has schema {schema}, its manifest says "
                              f"{manifest['schema']}: the backup is not consistent")
        os.chmod(staging, PRIVATE_DIR)
        aside = None
        stamp = time.strftime(".before-restore-%Y%m%dT%H%M%SZ", time.gmtime())
        if data_dir.exists():
            aside = data_dir.with_name(data_dir.name + stamp)
            os.rename(data_dir, aside)
        try:
            os.rename(staging, data_dir)
        except OSError as e:
            if aside is not None:
                os.rename(aside, data_dir)
            if kind == POSTGRESQL:
                raise BackupError(f"the database is restored, but {data_dir} could not be put in "
                                  f"place ({e}): it still holds the old files; restore again "
                                  "with --replace once the cause is fixed") from None
            raise
        if aside is not None and not occupied:
            aside.rmdir()  # it was an empty folder: nothing to keep
            aside = None
        if old_dump is not None:
            if aside is None:
                aside = private_dir(data_dir.with_name(data_dir.name + stamp))
            os.replace(old_dump, aside / PG_DUMP)
        manifest["kept_aside"] = str(aside) if aside else None
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old_dump is not None:
            shutil.rmtree(old_dump.parent, ignore_errors=True)


def _other_kind(backed_up: str) -> str:
    if backed_up == POSTGRESQL:
        return ("the backup holds a PostgreSQL store, and DATABASE_URL is not set: set it to "
                "the (empty) database to restore into")
    return ("the backup holds a SQLite store, and DATABASE_URL is set: restore it without "
            "DATABASE_URL, then move it with `fleet db copy`")
