"""A real, throwaway PostgreSQL server for the tests: Debian's server binaries, a fresh cluster in a
temporary directory, listening on 127.0.0.1 only (a free port) and on a unix socket inside that
directory, removed when the session ends.

    def test_it(postgres):                  # the session fixture (conftest imports it)
        psycopg2.connect(**postgres.connect_kwargs())

The binaries are those of Debian's `postgresql` package (/usr/lib/postgresql/<major>/bin: initdb,
pg_ctl, postgres; the newest major there), or of $SOURCE_KLARNA_PG_BIN. Missing ones fail the caller
with a sentence saying what to install (`scripts/ensure_postgres.sh` installs it); nothing is skipped.

PostgreSQL refuses to run as root: when this process is root (CI), initdb and the server run as the
`postgres` system user Debian's package creates (`runuser -u postgres --`), in a directory that user
owns under /tmp (pytest's own temporary directories are private to root). Otherwise they run as the
current user.

The cluster's superuser `postgres` is reachable only through the unix socket (trust, in a directory
only the server's user and root can enter); TCP connections need a password (scram-sha-256). The
tests connect over TCP as the role `klarna_test`, which owns the database `klarna_test` (so it can
create schemas: PyAirbyte's caches and dbt do), with a password drawn for this server.

Every wait is bounded: initdb, `pg_ctl start -w -t`, the readiness poll (a real login of the test
role, with a deadline) and `pg_ctl stop -m fast` (then `-m immediate`, then SIGKILL of the
postmaster) all have timeouts.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
BIN_ENV = "SOURCE_KLARNA_PG_BIN"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
SYSTEM_USER = "postgres"  # the user Debian's postgresql-common creates
TEST_ROLE = "klarna_test"
TEST_DATABASE = "klarna_test"
INSTALL_HINT = (
    "install Debian's `postgresql` package (as root: `apt-get install -y postgresql`, or run "
    "scripts/ensure_postgres.sh, which `make test` and .ci/run call)"
)

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
INITDB_TIMEOUT_S = 120
PORT_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it


class PostgresUnavailable(RuntimeError):
    """No server binaries, no user to run them as, or a server that did not start: the message says why."""


@dataclass(frozen=True)
class PostgresParams:
    """How to reach the server as the test role. `repr` leaves the password out."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    # Where the server lives (data directory, unix socket directory, log): for diagnostics.
    directory: str = field(default="", compare=False)
    version: str = field(default="", compare=False)
    start_seconds: float = field(default=0.0, compare=False)  # initdb to the first login of the test role

    def connect_kwargs(self) -> Dict[str, object]:
        """psycopg2.connect(**...) / psycopg.connect(**...) keywords."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password, "dbname": self.database}

    def as_dict(self) -> Dict[str, object]:
        """host, port, user, password, database: the warehouse helpers' and pyairbyte_sync's form."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password, "database": self.database}


def find_binaries() -> Path:
    """The directory holding initdb, pg_ctl and postgres: $SOURCE_KLARNA_PG_BIN, else the newest
    /usr/lib/postgresql/<major>/bin that has all three. Raises PostgresUnavailable with what to install."""
    candidates: List[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    else:
        def major(path: str) -> float:
            match = re.search(r"/postgresql/(\d+(?:\.\d+)?)/bin$", path)
            return float(match.group(1)) if match else -1.0

        candidates += [Path(p) for p in sorted(glob.glob(DEBIAN_BIN_GLOB), key=major, reverse=True)]
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES):
            return directory
    where = f"${BIN_ENV}={os.environ[BIN_ENV]}" if os.environ.get(BIN_ENV) else DEBIAN_BIN_GLOB
    raise PostgresUnavailable(
        f"PostgreSQL's server binaries ({', '.join(SERVER_BINARIES)}) were not found in {where}: {INSTALL_HINT}."
    )


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Runner:
    """Runs the server's commands as the user PostgreSQL accepts: `postgres` when this process is root."""

    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        self.uid = self.gid = None
        if self.as_root:
            try:
                entry = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"this process is root, which PostgreSQL refuses to run as, and there is no `{SYSTEM_USER}` system "
                    f"user to run it as: {INSTALL_HINT} (its postgresql-common creates the user)."
                ) from None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            self.runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            if not os.access(self.runuser, os.X_OK):
                raise PostgresUnavailable("this process is root and `runuser` (util-linux) is missing: it runs the server as `postgres`")

    def command(self, argv: Sequence[str]) -> List[str]:
        return [self.runuser, "-u", SYSTEM_USER, "--", *argv] if self.as_root else list(argv)

    def own(self, path: Path) -> None:
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def run(self, argv: Sequence[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        try:
            return subprocess.run(
                self.command(argv), cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise PostgresUnavailable(f"{' '.join(argv[:2])} did not finish within {timeout:.0f} s: {(error.output or '')[-1500:]}") from None


def _wait_ready(params: PostgresParams, deadline: float, log_file: Path) -> None:
    """Polls a real login of the test role over TCP until it answers `SELECT 1`, or the deadline."""
    import psycopg2

    last = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PostgresUnavailable(
                f"PostgreSQL on 127.0.0.1:{params.port} did not accept a login within the deadline ({last}); "
                f"server log:\n{_tail(log_file)}"
            )
        try:
            connection = psycopg2.connect(**params.connect_kwargs(), connect_timeout=max(1, int(min(remaining, 5))))
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
                return
            finally:
                connection.close()
        except psycopg2.OperationalError as error:
            last = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            time.sleep(0.1)  # the poll's interval; the deadline bounds the wait


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _postmaster_pid(data: Path) -> Optional[int]:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


class PostgresServer:
    """One throwaway cluster. `start()` returns the PostgresParams; `stop()` stops it and removes its directory."""

    def __init__(self, start_timeout: float = START_TIMEOUT_S, stop_timeout: float = STOP_TIMEOUT_S) -> None:
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.bin = find_binaries()
        self.runner = _Runner()
        self.directory: Optional[Path] = None
        self.params: Optional[PostgresParams] = None
        self.started = False

    # the cluster's files: <dir>/data, <dir>/run (unix socket), <dir>/server.log
    def _paths(self):
        assert self.directory is not None
        return self.directory / "data", self.directory / "run", self.directory / "server.log"

    def start(self) -> PostgresParams:
        began = time.monotonic()
        # Root: a directory the `postgres` user can reach (/tmp is world-traversable; pytest's are not).
        parent = os.environ.get("SOURCE_KLARNA_PG_TMPDIR") or ("/tmp" if self.runner.as_root else None)
        self.directory = Path(tempfile.mkdtemp(prefix="source-klarna-pg-", dir=parent))
        atexit.register(self.stop)
        try:
            self._start(began)
        except BaseException:
            self.stop()
            raise
        self.params = dataclasses.replace(self.params, start_seconds=round(time.monotonic() - began, 3))
        return self.params

    def _start(self, began: float) -> None:
        data, run, log = self._paths()
        run.mkdir(mode=0o700)
        superuser_password = secrets.token_urlsafe(18)
        password = secrets.token_urlsafe(18)
        pwfile = self.directory / "superuser.pw"
        pwfile.write_text(superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        for path in (self.directory, run, pwfile):
            self.runner.own(path)

        initdb = self.runner.run(
            [str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}", "-E", "UTF8",
             "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            INITDB_TIMEOUT_S, cwd=self.directory,
        )
        pwfile.unlink()
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed (exit {initdb.returncode}):\n{initdb.stdout[-2000:]}")
        version = (data / "PG_VERSION").read_text().strip()

        # Loopback only, the socket in our own directory; durability off (a throwaway test cluster).
        options = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{run}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "64MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        for attempt in range(PORT_ATTEMPTS):
            port = free_port()
            with (data / "postgresql.auto.conf").open("a") as conf:  # the last setting wins
                conf.write(f"port = {port}\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
            remaining = max(5.0, self.start_timeout - (time.monotonic() - began))
            started = self.runner.run(
                [str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(int(remaining)), "start"],
                remaining + 10, cwd=self.directory,
            )
            if started.returncode == 0:
                break
            if "could not bind" in _tail(log, 40) and attempt + 1 < PORT_ATTEMPTS:
                continue
            raise PostgresUnavailable(f"pg_ctl start failed (exit {started.returncode}): {started.stdout.strip()[-1000:]}\n"
                                      f"server log:\n{_tail(log)}")
        self.started = True

        # The test role and its database, as the superuser through the unix socket.
        import psycopg2
        from psycopg2 import sql

        admin = psycopg2.connect(host=str(run), port=port, user="postgres", dbname="postgres", connect_timeout=10)
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(TEST_ROLE)), [password])
                cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(TEST_DATABASE), sql.Identifier(TEST_ROLE)))
        finally:
            admin.close()

        self.params = PostgresParams(host="127.0.0.1", port=port, user=TEST_ROLE, password=password, database=TEST_DATABASE,
                                     directory=str(self.directory), version=version)
        _wait_ready(self.params, began + self.start_timeout, log)

    def stop(self) -> None:
        """Stops the server (fast, then immediate, then SIGKILL; each bounded) and removes its directory. Idempotent."""
        if self.directory is None:
            return
        data, _, _ = self._paths()
        if self.started and (data / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    done = self.runner.run([str(self.bin / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", str(int(self.stop_timeout)), "stop"],
                                           self.stop_timeout + 10, cwd=self.directory)
                    if done.returncode == 0:
                        break
                except PostgresUnavailable:
                    pass
            else:
                pid = _postmaster_pid(data)
                if pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        self.started = False
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresParams]:
    """A real PostgreSQL server for the whole session (see the module's docstring). No binaries: the
    test fails saying what to install, it is not skipped."""
    try:
        server = PostgresServer()
        params = server.start()
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield params
    finally:
        server.stop()
