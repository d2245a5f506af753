"""A throwaway PostgreSQL cluster for tests and benchmarks.

Usage::

    with PostgresCluster() as pg:
        url = pg.create_database("t1")  # postgresql+psycopg://bosun@127.0.0.1:PORT/t1

PostgreSQL refuses to run as root, so when the current process is root the server
binaries run as the ``postgres`` system user (via ``runuser``).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

SUPERUSER = "bosun"
DEFAULT_DB = "bosun"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _version_key(path: str) -> tuple[int, ...]:
    name = Path(path).parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def find_server_bindir() -> Path:
    """Directory holding initdb, pg_ctl and postgres (highest Debian version first, then PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for cand in candidates:
        if all(os.access(os.path.join(cand, b), os.X_OK) for b in _SERVER_BINARIES):
            return Path(cand)
    found = {b: shutil.which(b) for b in _SERVER_BINARIES}
    missing = [b for b, p in found.items() if p is None]
    if missing:
        raise RuntimeError(
            f"PostgreSQL server binaries not found: {', '.join(missing)} "
            "(looked in /usr/lib/postgresql/*/bin and PATH); run scripts/setup "
            "or install the 'postgresql' package"
        )
    # Resolve symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb)
    # so that all three come from the same installation.
    initdb = found["initdb"]
    assert initdb is not None
    return Path(os.path.realpath(initdb)).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """A private PostgreSQL server in a temporary directory, listening on 127.0.0.1."""

    def __init__(self, *, durable: bool = False, bindir: Path | None = None) -> None:
        self.durable = durable
        self._bindir_override = bindir
        self._tmpdir: Path | None = None
        self._port: int | None = None
        self._run_as: str | None = None
        self._bindir: Path | None = None
        self._started = False
        self._atexit_registered = False

    # -- properties ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("PostgresCluster is not started")
        return self._port

    @property
    def datadir(self) -> Path:
        return self._require_tmpdir() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._require_tmpdir() / "sock"

    @property
    def logfile(self) -> Path:
        return self._require_tmpdir() / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default ``bosun`` database."""
        return self.url_for(DEFAULT_DB)

    def url_for(self, name: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{name}"

    def conninfo(self, dbname: str = DEFAULT_DB) -> str:
        """libpq connection string (for psycopg.connect)."""
        return f"host={HOST} port={self.port} user={SUPERUSER} dbname={dbname}"

    @property
    def running(self) -> bool:
        return self._started

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> Self:
        if self._started:
            return self
        bindir = self._bindir_override or find_server_bindir()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="bosun-pg-"))
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._prepare_dirs()
            initdb = [str(bindir / "initdb"), "-D", str(self.datadir), "-A", "trust"]
            initdb += ["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"]
            self._run(initdb, what="initdb")
            self._bindir = bindir
            self._start_server(bindir)
            self._started = True
            self._wait_ready()
            self._create_database(DEFAULT_DB)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete its files. Safe to call repeatedly."""
        tmpdir, self._tmpdir = self._tmpdir, None
        if tmpdir is None:
            return
        datadir = tmpdir / "data"
        if (datadir / "postmaster.pid").exists():
            bindir = self._bindir or find_server_bindir()
            argv = [str(bindir / "pg_ctl"), "stop", "-D", str(datadir), "-m", "immediate"]
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    self._wrap([*argv, "-s", "-w", "-t", "30"]),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=60,
                    check=False,
                    cwd=tmpdir,
                )
        self._started = False
        self._port = None
        shutil.rmtree(tmpdir, ignore_errors=True)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases ----------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL."""
        if not self._started:
            raise RuntimeError("PostgresCluster is not started")
        self._create_database(name)
        return self.url_for(name)

    def _create_database(self, name: str) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid database name: {name!r}")
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    # -- helpers ------------------------------------------------------------

    def _require_tmpdir(self) -> Path:
        if self._tmpdir is None:
            raise RuntimeError("PostgresCluster is not started")
        return self._tmpdir

    def _wrap(self, argv: list[str]) -> list[str]:
        if self._run_as is None:
            return argv
        return ["runuser", "-u", self._run_as, "--", *argv]

    def _prepare_dirs(self) -> None:
        """Create the socket dir; as root, hand the temp dir to the ``postgres`` user."""
        tmpdir = self._require_tmpdir()
        self.socket_dir.mkdir(mode=0o700)
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError(
                "running as root but there is no 'postgres' system user to run the "
                "PostgreSQL server as (install the Debian 'postgresql' package)"
            ) from exc
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root but 'runuser' (util-linux) is not available")
        for path in (tmpdir, self.socket_dir):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run_as = pw.pw_name

    def _start_server(self, bindir: Path, attempts: int = 3) -> None:
        # The free port is picked before the server binds it; retry if someone else took it.
        for attempt in range(1, attempts + 1):
            self._port = _free_port()
            opts = [
                f"-c listen_addresses={HOST}",
                f"-p {self._port}",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c max_connections=300",
            ]
            if not self.durable:
                opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            argv = [str(bindir / "pg_ctl"), "start", "-D", str(self.datadir)]
            argv += ["-l", str(self.logfile), "-s", "-w", "-t", str(int(START_TIMEOUT_S))]
            try:
                self._run([*argv, "-o", " ".join(opts)], what="pg_ctl start")
                return
            except RuntimeError as exc:
                if attempt == attempts or "could not bind" not in str(exc):
                    raise

    def _run(self, argv: list[str], *, what: str) -> None:
        proc = subprocess.run(
            self._wrap(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self._tmpdir,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                f"{proc.stdout}{proc.stderr}{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- server log tail ({self.logfile}) ---\n{tail}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.05)
        raise RuntimeError(
            f"PostgreSQL on {HOST}:{self.port} did not accept connections within "
            f"{START_TIMEOUT_S:.0f}s (last error: {last_error}){self._log_tail()}"
        )
