"""A throwaway PostgreSQL cluster for a test run: initdb + pg_ctl in a temp dir, on a free port.

Never the machine's own server: the cluster lives in its own folder, listens on 127.0.0.1 on a
port nobody used, and is removed when the run ends. initdb refuses to run as root, so as root (CI)
the cluster belongs to the `postgres` user and every command runs through `runuser`.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from services import free_port

TEMPLATE = "polylink_template"


def bindir() -> Path:
    """PostgreSQL's server programs (initdb, pg_ctl), from `pg_config --bindir`."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise RuntimeError("pg_config is missing: apt-get install postgresql")
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
    path = Path(out.stdout.strip())
    if not (path / "initdb").exists():
        # Debian's pg_config (libpq-dev) names /usr/bin; the server lives in its own folder.
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise RuntimeError("initdb is missing: apt-get install postgresql")
        path = found[-1].parent
    return path


class PgCluster:
    """A started cluster; url(db) names one of its databases, fresh() makes a new one."""

    def __init__(self, durable: bool = False):
        self.durable = durable  # True: PostgreSQL's own defaults (benchmarks), False: fast tests
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="polylink-pg-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        self.count = 0

    def _run(self, *args, **kwargs):
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, **kwargs)

    def start(self) -> "PgCluster":
        self._run(self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        # A test cluster: durability off (fsync, full pages) for speed; the fleet's own
        # PostgreSQL keeps the defaults.
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                " -c max_connections=200 -c shared_buffers=64MB")
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for attempt in range(5):
            try:
                self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.root / "log", "-w",
                          "-t", "60", "-o", opts, "start")
                break
            except subprocess.CalledProcessError:
                if attempt == 4:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log()) from None
                self.port = free_port()  # someone took the port meanwhile
                opts = opts.replace(opts.split()[1], str(self.port), 1)
        return self

    def log(self) -> str:
        try:
            return (self.root / "log").read_text()[-4000:]
        except OSError:
            return ""

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            conn.execute(statement)

    def make_template(self, prepare) -> None:
        """Create the template database every fresh() copies; prepare(url) fills it."""
        self.sql(f"CREATE DATABASE {TEMPLATE}")
        prepare(self.url(TEMPLATE))

    def fresh(self) -> str:
        """A new database copied from the template (much faster than migrating each time)."""
        self.count += 1
        name = f"t{os.getpid()}_{self.count}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def drop(self, name: str) -> None:
        # FORCE: a worker a test left running must not keep the database (and the disk) alive.
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def wait_until_gone(cluster: PgCluster, timeout: float = 10.0) -> None:
    """Block until the cluster's port no longer answers (after stop())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (cluster.root / ".s.PGSQL.%d" % cluster.port).exists():
        time.sleep(0.1)
