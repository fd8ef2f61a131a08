"""The projection workers of ``eventvault serve --projection-workers N``: child processes it looks after.

A server that runs its projections in its own threads shares one interpreter
lock between them and the requests it answers. Run as ``eventvault worker``
processes instead, the projections (and transfers) take another core, and the
server's own is left to its requests (docs/scaling.md). These children are
that layout without a second command to run: the server starts them once its
read-model tables exist, starts again one that dies, and stops them with it.

Each child is ``python -m eventvault_ledger.cli worker --until-stdin-closes``
on the server's store, with its stdin a pipe from the server. Closing the pipe
is how the server stops it: the worker gives its partitions back and exits.
When the server ends without closing it (kill -9, a crash), the kernel closes
the pipe all the same, so no worker outlives its server. Each child has a
process group of its own, so that Ctrl-C in a terminal reaches the server
alone, which then stops its workers in order.

A child that exits while the server runs is started again after a pause that
doubles from 1 s up to 30 s, and is back to 1 s once a child has run for a
minute: a worker that cannot start (its database away) is retried without
spinning.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["WorkerProcesses", "worker_command"]

log = logging.getLogger("eventvault_ledger.workers")

FIRST_PAUSE = 1.0
"""Seconds before a dead worker is started again, the first time."""
LONGEST_PAUSE = 30.0
"""The pause doubles after each failed start, up to this."""
STEADY_AFTER = 60.0
"""A worker that ran this long before it died is restarted after the first pause again."""


def worker_command(db: str, *, log_level: str, lease_seconds: float = 10.0) -> list[str]:
    """The command line of one child: ``eventvault worker`` on ``db``, until its stdin closes."""
    return [
        sys.executable,
        "-m",
        "eventvault_ledger.cli",
        "worker",
        "--db",
        db,
        "--log-level",
        log_level,
        "--lease-seconds",
        f"{lease_seconds:g}",
        "--until-stdin-closes",
    ]


class WorkerProcesses:
    """``count`` child processes running ``command``, each started again if it dies, until :meth:`stop`."""

    def __init__(self, command: Sequence[str], count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.command = list(command)
        self.count = count
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the children, each with a thread that waits on it and starts it again."""
        for slot in range(self.count):
            thread = threading.Thread(
                target=self._supervise, args=(slot,), name=f"eventvault-worker-{slot}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def begin_stop(self) -> None:
        """Start no child again from now on (safe from a signal handler)."""
        self._stopping.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Close every child's stdin, wait up to ``timeout`` for them to exit, kill any still running."""
        with self._lock:
            self._stopping.set()
            children = list(self._children.values())
        for child in children:
            _close(child.stdin)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("projection worker (pid %d) did not stop within %gs: killed", child.pid, timeout)
                child.kill()
                child.wait()
        for thread in self._threads:
            thread.join()

    def _supervise(self, slot: int) -> None:
        pause = FIRST_PAUSE
        while True:
            started = time.monotonic()
            child: subprocess.Popen[bytes] | None = None
            with self._lock:  # stop() sees every child started, or this starts none
                if self._stopping.is_set():
                    return
                try:
                    child = subprocess.Popen(  # noqa: S603 - this interpreter and the server's own arguments
                        self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, process_group=0
                    )
                except OSError as exc:
                    log.error("projection worker %d could not start: %s", slot, exc)  # noqa: TRY400 - one line
                else:
                    self._children[slot] = child
            code = None
            if child is not None:
                log.info("projection worker %d started (pid %d)", slot, child.pid)
                code = child.wait()
                _close(child.stdin)
                if self._stopping.is_set():
                    return
            if time.monotonic() - started >= STEADY_AFTER:
                pause = FIRST_PAUSE
            if child is not None:
                how = f"killed by signal {-code}" if code and code < 0 else f"exited with status {code}"
                log.warning(
                    "projection worker %d (pid %d) %s; starting it again in %gs", slot, child.pid, how, pause
                )
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, LONGEST_PAUSE)


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with contextlib.suppress(OSError, ValueError):  # the child is gone already, or it was closed
            pipe.close()
