"""Waiting for a server process the tests started: one ``/healthz`` poll for all of them.

``wait_healthy(base, process, log)`` returns once ``GET {base}/healthz`` answers
200, and fails at once (with the process's output) if the process exits first,
or after ``deadline`` seconds. Waiting on another process to listen is inherent:
this polls, with a deadline, and orders nothing of the test's own.
:class:`ServerProcess` starts a server command, waits for it, kills it and starts it again.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Self

import httpx

from eventvault.testing import eventually

START_DEADLINE = 60.0  # generous for a loaded machine: the wait ends as soon as the server answers


def healthy(base: str) -> bool:
    """Whether ``GET {base}/healthz`` answers 200 right now."""
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    return False


def wait_healthy(
    base: str,
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    log: Path,
    *,
    deadline: float = START_DEADLINE,
) -> float:
    """Poll ``{base}/healthz`` until it answers 200; the seconds it took. Fails if ``process`` exits."""
    started = time.monotonic()

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"the server exited with {process.returncode} before /healthz:\n{log.read_text()}"
            )
        return healthy(base)

    eventually(up, within=deadline, what=lambda: f"/healthz of {base}:\n{log.read_text()}")
    return time.monotonic() - started


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], *, timeout: float = 30.0) -> int:
    """SIGTERM and wait; the exit status. One still running after ``timeout`` is killed, and that raised."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


class ServerProcess:
    """``command``, a server answering /healthz at ``base``, as a process to kill and start again.

    Its output goes to ``log`` (appended to across restarts). Used as a context
    manager, whatever still runs at the end is killed.
    """

    def __init__(self, command: list[str], base: str, log: Path, cwd: Path) -> None:
        self.command = command
        self.base = base
        self.log = log
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it and wait for /healthz; the seconds that took."""
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(  # noqa: S603 - the tests' own commands
                self.command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, "NO_COLOR": "1"},
            )
        return wait_healthy(self.base, self.process, self.log)

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None, "not started"
        return self.process.pid

    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing of the server's own shutdown runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL if it does not end within 30 s); the exit status."""
        assert self.process is not None, "not started"
        return stop(self.process)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
