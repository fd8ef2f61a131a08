"""A private PostgreSQL server for tests: ``initdb`` in a temporary folder, on a free port.

::

    with PostgresCluster() as cluster:          # initdb + start: a second or two
        url = cluster.create_database("test")   # postgresql://postgres@127.0.0.1:PORT/test
        ...
        cluster.crash()                         # pg_ctl stop -m immediate: as a power cut for the server
        cluster.start()                         # crash recovery, same port, same data
    # stopped and removed

Tests that stop, crash or restart PostgreSQL need a server nobody else uses:
stopping a shared one breaks everyone else's sessions, and a reader's horizon
can be held back by whatever else runs there. This one is made from the
server binaries already on the machine (``pg_config --bindir``, then
``/usr/lib/postgresql/*/bin``, then ``initdb`` on the ``PATH``), listens only
on 127.0.0.1, trusts local connections, and keeps its data in a folder of its
own that :meth:`PostgresCluster.destroy` removes.

The server does not run as root (PostgreSQL refuses to); when the tests do,
it runs as the ``postgres`` user (or ``nobody``), which owns its folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ClusterUnavailable", "PostgresCluster", "find_bindir"]

# Settings for a throwaway test server. fsync off: a crash of the server
# (stop -m immediate) still loses nothing that was committed, because the WAL
# was written to the operating system before the commit returned; only a
# crash of the machine would, and that is not what such a server is for.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}

_START_TRIES = 5  # another program may take the free port before the server binds it


class ClusterUnavailable(RuntimeError):
    """No private server can be made here: the binaries are missing, or it would not start."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The folder of the server binaries (``initdb``, ``pg_ctl``, ``postgres``), or None.

    ``EVENTVAULT_PG_BINDIR`` first, then ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu keep them there, off the
    ``PATH``), then wherever ``initdb`` is on the ``PATH``.
    """
    candidates: list[Path] = []
    if env := os.environ.get("EVENTVAULT_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(  # noqa: S603 - a fixed command found on the PATH
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            )
            candidates.append(Path(done.stdout.strip()))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    return next((bindir for bindir in candidates if _has_binaries(bindir)), None)


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server when we are root (PostgreSQL refuses to run as root); None: ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterUnavailable("running as root, and there is no 'postgres' or 'nobody' user to run the server")


class PostgresCluster:
    """A PostgreSQL server of the caller's own, in a temporary folder; see the module docs.

    ``settings`` are added to (and override) :data:`DEFAULT_SETTINGS` in its
    ``postgresql.conf``. The port is chosen at the first :meth:`start` and kept
    across restarts, so URLs stay valid.
    """

    def __init__(
        self,
        bindir: Path | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        base: Path | None = None,
    ) -> None:
        found = bindir or find_bindir()
        if found is None or not _has_binaries(found):
            where = f" in {bindir}" if bindir else ""
            raise ClusterUnavailable(
                f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) found{where}: install "
                "PostgreSQL (Debian: apt-get install postgresql) or set EVENTVAULT_PG_BINDIR"
            )
        self.bindir = found
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self._base = base
        self._user = _server_user()
        self.root: Path | None = None
        self.port: int | None = None

    # -- paths and URLs ------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder (made by the first :meth:`start`)."""
        return self._root() / "data"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self._root() / "server.log"

    def _root(self) -> Path:
        if self.root is None:
            raise ClusterUnavailable("the cluster has not been started yet")
        return self.root

    def url(self, dbname: str = "postgres") -> str:
        """A URL for ``dbname`` on this server, as the superuser ``postgres``."""
        if self.port is None:
            raise ClusterUnavailable("the cluster has not been started yet")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    # -- running it ----------------------------------------------------------------------

    def _run(self, args: Sequence[str | Path], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        user = self._user
        return subprocess.run(  # noqa: S603 - the server's own binaries, with arguments we build
            [str(a) for a in args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=self._root(),
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
        )

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
            raise ClusterUnavailable(
                f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}"
                + (f"\nserver log:\n{log}" if log else "")
            )

    def _init(self) -> None:
        # Run as another user, the server must reach its folder: /tmp is open to
        # all, a test's own temporary folder (TMPDIR) often is not.
        base = self._base or (Path("/tmp") if self._user is not None else None)  # noqa: S108
        root = Path(tempfile.mkdtemp(prefix="eventvault-pg-", dir=base))
        self.root = root
        if self._user is not None:
            os.chown(root, self._user.pw_uid, self._user.pw_gid)
        done = self._run(
            [
                self.bindir / "initdb",
                "-D",
                self.data_dir,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self._check(done, "initdb")

    def _configure(self, port: int) -> None:
        lines = [
            f"port = {port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.data_dir}'",
            *(f"{name} = {value}" for name, value in self.settings.items()),
        ]
        auto = self.data_dir / "postgresql.auto.conf"
        # Written as the server's user would: postgresql.auto.conf is the server's own file.
        auto.write_text("\n".join(lines) + "\n")
        if self._user is not None:
            os.chown(auto, self._user.pw_uid, self._user.pw_gid)

    def _pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self._run([self.bindir / "pg_ctl", "-D", self.data_dir, *args], timeout=timeout)

    def start(self) -> Self:
        """Start the server (made first, on a free port, if it does not exist yet); waits until it answers."""
        if self.root is None:
            self._init()
        if self.port is not None:
            self._start()
            return self
        for attempt in range(_START_TRIES):
            port = _free_port()
            self._configure(port)
            try:
                self.port = port
                self._start()
            except ClusterUnavailable:
                self.port = None
                if attempt == _START_TRIES - 1:
                    raise
            else:
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self) -> None:
        done = self._pg_ctl("-l", str(self.log_file), "-w", "-t", "120", "start", timeout=180)
        self._check(done, "pg_ctl start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (roll back and disconnect) or ``immediate`` (a crash)."""
        done = self._pg_ctl("-m", mode, "-w", "-t", "120", "stop", timeout=180)
        self._check(done, f"pg_ctl stop -m {mode}")

    def crash(self) -> None:
        """Stop the server as a crash would (``-m immediate``): the next start runs crash recovery."""
        self.stop("immediate")

    def restart(self) -> None:
        """Stop (fast) and start again, on the same port."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        """Whether the server process is up (``pg_ctl status``)."""
        return self.root is not None and self._pg_ctl("status", timeout=30).returncode == 0

    def create_database(self, name: str) -> str:
        """Create database ``name`` (if it does not exist) and return its URL."""
        import psycopg  # noqa: PLC0415 - the postgres extra; only this method needs it
        from psycopg import sql  # noqa: PLC0415

        with psycopg.connect(self.url(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server (as a crash: its data is thrown away) and remove its folder."""
        if self.root is None:
            return
        if self.is_running():
            with contextlib.suppress(ClusterUnavailable, subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"PostgresCluster(bindir={str(self.bindir)!r}, port={self.port}, root={str(self.root)!r})"
