"""Fault tests: the service under a full disk, signals, and stops racing its own threads.

Some need privileges (a tmpfs mount): without them they skip with a loud
reason, and under ``CI=true`` they fail instead, so CI never silently skips a fault.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

EVENTVAULT = Path(sys.executable).with_name("eventvault")


def eventvault_command(*args: str) -> list[str]:
    """The ``eventvault`` console script of this environment with ``args``."""
    if EVENTVAULT.exists():
        return [str(EVENTVAULT), *args]
    return [sys.executable, "-m", "eventvault_ledger.cli", *args]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cannot(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted in this test's temp dir (unmounted after the test)."""
    mount = shutil.which("mount")
    if mount is None:
        _cannot("NO `mount` COMMAND: the disk-full test is NOT RUN")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(  # noqa: S603 - fixed arguments
        [str(mount), "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _cannot(f"CANNOT MOUNT A 2 MiB TMPFS ({done.stderr.strip()}): the disk-full test is NOT RUN")
    try:
        yield disk
    finally:
        umount = shutil.which("umount") or "umount"
        if subprocess.run([umount, str(disk)], capture_output=True, check=False).returncode != 0:  # noqa: S603
            # Still busy (a connection the test left open): detach it so the dir can go.
            subprocess.run([umount, "-l", str(disk)], capture_output=True, check=False)  # noqa: S603


def _fill(path: Path) -> int:
    """Write ``path`` until its file system is full; the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            with contextlib.suppress(OSError):
                while True:
                    written += os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return written


@pytest.fixture
def fill() -> Callable[[Path], int]:
    """``fill(path)``: write ``path`` until its file system is full; the bytes written."""
    return _fill


@pytest.fixture
def eventvault() -> Callable[..., list[str]]:
    """``eventvault(*args)``: the command line of this environment's ``eventvault`` script."""
    return eventvault_command


@pytest.fixture
def port() -> int:
    """A TCP port nobody listens on right now."""
    return free_port()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A server's database: a SQLite file, or a schema of this test's own on the run's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    schema = f"evt_faults_{uuid.uuid4().hex[:10]}"
    yield f"{server.url}?schema={schema}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
