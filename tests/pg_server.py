"""A throwaway PostgreSQL server for the tests (not used by the service).

PostgresServer() runs initdb in a fresh temporary folder and starts `postgres` on 127.0.0.1 on a free port, with its
unix socket in that folder. initdb and postgres refuse to run as root, so a root test process runs them as an
unprivileged user ("postgres", which Debian's package creates, else "nobody"); any other user runs them as itself.
Authentication is `trust` for user "postgres": URLs carry no password. close() (or the end of the process, by atexit,
or its death by any signal, through a small watchdog process) stops the server and removes the folder.
"""

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from watched import Watched

SUPERUSER = "postgres"
HOST = "127.0.0.1"
INSTALL_HINT = ("PostgreSQL server binaries (initdb, postgres) not found: install Debian's postgresql package "
                "(apt-get install --no-install-recommends postgresql; .ci/run does it), or set TCSYNC_TEST_PG=skip "
                "to skip the tests that need PostgreSQL")


# Run beside the server by the owner's interpreter, holding the read end of a pipe that only the owner writes to. EOF
# means the owner closed it (close()) or died, even by SIGKILL or an unhandled SIGTERM, where atexit never runs:
# then it stops whatever server is left in the folder (immediate shutdown) and removes the folder.
_WATCHDOG = """
import os, shutil, signal, sys, time
sys.stdin.buffer.read()
base = sys.argv[1]
try:
    with open(os.path.join(base, "data", "postmaster.pid")) as f:
        pid = int(f.readline())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if base.encode() not in f.read():
            raise ValueError("not our postmaster")
    os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until it is gone or a zombie (its parent, the owner, died)
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
except (OSError, ValueError):
    pass
shutil.rmtree(base, ignore_errors=True)
"""


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def _has_server(bindir) -> bool:
    return all(os.access(Path(bindir) / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(path: Path):
    return [int(part) if part.isdigit() else -1 for part in path.parent.name.split(".")]


def find_bindir() -> Path:
    """The folder of initdb and postgres: pg_config --bindir, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        # Without a server package, pg_config comes from libpq-dev and says /usr/bin, which has no initdb.
        done = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)  # resolve: a symlink in /usr/local/bin
    for bindir in candidates:
        if _has_server(bindir):
            return bindir
    raise PostgresNotFound(INSTALL_HINT)


def unprivileged_user() -> pwd.struct_passwd | None:
    """Whom to run the server as: None (ourselves) unless we are root; then "postgres", else "nobody"."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, but there is neither a 'postgres' nor a 'nobody' user to run PostgreSQL as")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class PostgresServer(Watched):
    """One cluster in a temporary folder; also a context manager (close() on exit).

    fsync=False trades durability for speed; settings are extra `postgres -c name=value` options; user (when we are
    root) names whom to run the server as instead of "postgres" or "nobody".
    """

    def __init__(self, *, fsync: bool = True, settings: dict | None = None, user: str | None = None,
                 bindir: Path | str | None = None, timeout: float = 60.0):
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.account = pwd.getpwnam(user) if user else unprivileged_user()
        self.timeout = timeout
        self.settings = {"listen_addresses": HOST, "fsync": "on" if fsync else "off", **(settings or {})}
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._names = itertools.count(1)
        # Under /tmp (not $TMPDIR, which may sit in /root) so that the server's user can reach it; mode 0700.
        self.watch(Path(tempfile.mkdtemp(prefix="tcsync-pg-", dir="/tmp" if self.account else None)), _WATCHDOG)
        try:
            if self.account:
                os.chown(self.base, self.account.pw_uid, self.account.pw_gid)
            self.data = self.base / "data"
            self.log_path = self.base / "postgres.log"
            self._run([self.bindir / "initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                       "--locale=C", "--no-sync", "--no-instructions"])
            self.start()
        except BaseException:
            self.close()
            raise

    # Running the binaries -----------------------------------------------------------------------

    def _child_options(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # e.g. PGDATA, PGPORT: not ours
        env["LC_ALL"] = "C"
        options = {"cwd": self.base, "env": env}  # cwd: the caller's (say /root) may be closed to the server's user
        if self.account:
            options.update(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[])  # drop root's groups
        return options

    def _run(self, argv):
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=self.timeout,
                              **self._child_options())
        if done.returncode:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()}")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._process.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # Life cycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (again) on its data folder and port; return when it accepts connections."""
        if self.running:
            return
        if self.port:  # again: the same port, which clients already hold in their URLs
            try:
                return self._start()
            except _PortTaken:
                raise RuntimeError(f"port {self.port} was taken while PostgreSQL was stopped") from None
        for _attempt in range(3):  # another process may take the free port before postgres binds it
            self.port = free_port()
            with contextlib.suppress(_PortTaken):
                return self._start()
        raise RuntimeError(f"PostgreSQL found no free port:\n{self.log_tail()}")

    def _start(self) -> None:
        argv = [self.bindir / "postgres", "-D", self.data, "-p", self.port, "-k", self.base]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C meant for pytest reaches pytest, whose cleanup then stops the server.
            self._process = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True, **self._child_options())
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.timeout
        while True:
            if self._process.poll() is not None:
                tail = self.log_tail()
                if "could not bind" in tail or "could not create any TCP/IP sockets" in tail:
                    raise _PortTaken()
                raise RuntimeError(f"PostgreSQL exited with {self._process.returncode} while starting:\n{tail}")
            try:
                psycopg.connect(self.url(), connect_timeout=5).close()
                return
            except psycopg.OperationalError:  # refused, or "the database system is starting up"
                if time.monotonic() > deadline:
                    self._signal_and_wait(signal.SIGQUIT, 10)
                    raise RuntimeError(f"PostgreSQL not ready within {self.timeout} s:\n{self.log_tail()}") from None
                time.sleep(0.02)

    def _signal_and_wait(self, sig, timeout: float) -> bool:
        if not self.running:
            return True
        self._process.send_signal(sig)
        try:
            self._process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT, as `pg_ctl stop -m fast`): clients are disconnected, the data is kept."""
        if not self._signal_and_wait(signal.SIGINT, self.timeout):
            self.kill()

    def kill(self) -> None:
        """Immediate shutdown (SIGQUIT, as `pg_ctl stop -m immediate`): the next start() runs crash recovery."""
        if not self._signal_and_wait(signal.SIGQUIT, 10):
            self._signal_and_wait(signal.SIGKILL, 10)

    # Databases ------------------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new, empty database with a name of its own; returns its URL."""
        import psycopg
        from psycopg import sql

        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:  # CREATE DATABASE refuses a transaction
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by create_database (its connections too): a test's ~7.5 MB go back at once."""
        import psycopg
        from psycopg import sql

        if not self.running:
            return
        name = sql.Identifier(url.rsplit("/", 1)[1])
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


class _PortTaken(Exception):
    pass
