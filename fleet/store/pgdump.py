"""A consistent copy of a PostgreSQL store with the real pg_dump, and putting one back.

The PostgreSQL twin of snapshot.py. pg_dump (custom format) is PostgreSQL's own answer: the dump
is one snapshot of the database while the fleet keeps writing. We open a REPEATABLE READ
transaction, export its snapshot and hand it to `pg_dump --snapshot`, so the schema version read
here and the dump are the same state.

A restore is one transaction: psql --single-transaction runs our DROP of the store's tables, then
pg_restore's statements; any error rolls everything back and the database is as it was.

The client tools come from PG_BINDIR if set, else `pg_config --bindir` (PostgreSQL's own way to
name its programs' folder), else PATH. The password never appears on a command line (it would be
in `ps` for every user of the machine): it goes to the tools as PGPASSWORD.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .base import StoreError, describe


class DumpError(StoreError):
    """A PostgreSQL dump cannot be made or put back."""


# Objects of the store's schema, dropped before a restore. Tables first: they take their indexes,
# partitions and identity sequences with them (which cannot be dropped on their own), so those
# rows of the loop are gone already, hence IF EXISTS.
_DROP_SCHEMA_OBJECTS = """
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
             AND NOT c.relispartition
           ORDER BY c.relkind = 'S' LOOP
    EXECUTE format('DROP %s IF EXISTS %I.%I CASCADE',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                  WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                   current_schema(), r.relname);
  END LOOP;
  -- The store's own functions (0038's triggers'); an extension's stay with their extension.
  FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = current_schema() AND p.prokind = 'f'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                             AND d.objid = p.oid AND d.deptype = 'e') LOOP
    EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.f);
  END LOOP;
END $$;
"""
_CHUNK = 1 << 16


def tool(name: str) -> Path:
    """The path of a PostgreSQL client program (pg_dump, pg_restore, psql); DumpError if none."""
    folder = os.environ.get("PG_BINDIR")
    if not folder and (pg_config := shutil.which("pg_config")):
        try:
            folder = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                    check=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            folder = None
    found = Path(folder) / name if folder else None
    if found is None or not os.access(found, os.X_OK):
        on_path = shutil.which(name)
        if on_path is None:
            where = f" (not in PG_BINDIR={folder})" if os.environ.get("PG_BINDIR") else ""
            raise DumpError(f"{name} is missing{where}: install PostgreSQL's client tools "
                            "(apt-get install postgresql-client) or set PG_BINDIR to their folder")
        found = Path(on_path)
    return found


def tool_major(path: Path) -> int:
    """The major version of a client program, from its --version line."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise DumpError(f"cannot run {path}: {e}") from None
    m = re.search(r"\(PostgreSQL\) (\d+)", out)
    if not m:
        raise DumpError(f"{path} does not say its PostgreSQL version (got {out.strip()!r})")
    return int(m.group(1))


def _environment(url: str) -> tuple[str, dict]:
    """(connection string without the password, environment with PGPASSWORD) for the tools."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo(**params), env


def _failed(what: str, url: str, stderr: str) -> DumpError:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    # The first error says what went wrong; the lines after it only where (CONTEXT, LINE).
    errors = [line for line in lines if "ERROR" in line or "error:" in line]
    said = (errors or lines or ["no message"])[0]
    return DumpError(f"{what} {describe(url)} failed: {said}")


def _connect(url: str):
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=30)
    except psycopg.OperationalError as e:
        raise DumpError(f"cannot connect to {describe(url)}: {str(e).strip()}") from None


def _check_version(pg_dump: Path, conn) -> str:
    server = conn.info.server_version // 10000
    client = tool_major(pg_dump)
    if client < server:
        raise DumpError(f"{pg_dump} is PostgreSQL {client}'s, older than the server "
                        f"({server}): install postgresql-client-{server} and set PG_BINDIR "
                        "to its folder if pg_config names the old one")
    return f"{pg_dump} (PostgreSQL {client}) for a PostgreSQL {server} server"


def check_tools(url: str) -> str:
    """What pg_dump a backup of the database at url would use; DumpError if it cannot."""
    pg_dump = tool("pg_dump")
    for name in ("pg_restore", "psql"):
        tool(name)
    with _connect(url) as conn:
        return _check_version(pg_dump, conn)


def dump(url: str, dest: Path) -> int:
    """Dump the database at url into the file dest (pg_dump's custom format); its schema version.

    Refuses a pg_dump older than the server (pg_dump itself would refuse, in less plain words).
    """
    pg_dump = tool("pg_dump")
    conninfo, env = _environment(url)
    with _connect(url) as conn:
        _check_version(pg_dump, conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            raise DumpError(f"{describe(url)} holds no fleet (no schema_version table): is "
                            "DATABASE_URL right?")
        schema = conn.execute("SELECT version FROM schema_version").fetchone()[0]
        # The snapshot lives as long as this transaction: pg_dump runs inside the `with`.
        done = subprocess.run(
            [str(pg_dump), "--format=custom", "--no-owner", "--no-privileges",
             f"--snapshot={snapshot_id}", f"--file={dest}", f"--dbname={conninfo}"],
            capture_output=True, text=True, env=env)
        conn.execute("COMMIT")
    if done.returncode != 0:
        raise _failed("pg_dump of", url, done.stderr)
    return schema


def check_dump(path: Path) -> None:
    """DumpError unless pg_restore reads the dump's table of contents (a custom-format dump)."""
    done = subprocess.run([str(tool("pg_restore")), "--list", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        # A damaged dump can crash pg_restore (SIGSEGV) with nothing on stderr.
        raise DumpError("the database dump in the backup cannot be read: " + (
            lines[-1] if lines else f"pg_restore stopped with exit status {done.returncode}"))


def other_sessions(url: str) -> list[str]:
    """The other client sessions on the database at url (a running fleet), as 'pid application'."""
    with _connect(url) as conn:
        return [f"{pid} {app or 'unnamed'}" for pid, app in conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'")]


def holds_tables(url: str) -> bool:
    """True when the store's schema at url has any table (a fleet, even an empty one)."""
    with _connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                            ).fetchone()[0] > 0


def restore(url: str, path: Path) -> int:
    """Replace the store's tables at url by the dump at path, in one transaction; its schema."""
    pg_restore, psql = tool("pg_restore"), tool("psql")
    conninfo, env = _environment(url)
    env["PGOPTIONS"] = "-c client_min_messages=warning"  # not a NOTICE per dropped object
    with tempfile.TemporaryFile() as read_err, tempfile.TemporaryFile() as write_err:
        reader = subprocess.Popen(
            [str(pg_restore), "--no-owner", "--no-privileges", "--file=-", str(path)],
            stdout=subprocess.PIPE, stderr=read_err, env=env)
        writer = subprocess.Popen(
            [str(psql), "--no-psqlrc", "--quiet", "--single-transaction",
             "--set=ON_ERROR_STOP=1", "--file=-", f"--dbname={conninfo}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=write_err, env=env)
        try:
            writer.stdin.write(_DROP_SCHEMA_OBJECTS.encode())
            # Streamed: a dump of millions of readings never sits in memory.
            while chunk := reader.stdout.read(_CHUNK):
                writer.stdin.write(chunk)
        except BrokenPipeError:
            pass  # psql stopped at an error (and rolled back): its stderr says which
        finally:
            reader.stdout.close()
            reader.wait()
            if reader.returncode != 0:
                # psql commits when its input ends: a dump read only in part must never get
                # there, so psql is killed mid-transaction and the server rolls it back.
                writer.kill()
            else:
                try:
                    writer.stdin.close()
                except BrokenPipeError:
                    pass
            writer.wait()
        if reader.returncode != 0:
            raise _failed("reading the dump for", url, _text(read_err))
        if writer.returncode != 0:
            raise _failed("restoring into", url, _text(write_err))
    with _connect(url) as conn:
        return conn.execute("SELECT version FROM schema_version").fetchone()[0]


def _text(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")
