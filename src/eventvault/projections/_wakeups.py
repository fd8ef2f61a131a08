"""Wake-ups for projection workers and for waiters on their progress.

An append through the same store object wakes the workers at once; appends by
other processes are seen through the store's own mechanism (LISTEN/NOTIFY on
PostgreSQL) and, on SQLite, by polling ``PRAGMA data_version`` on a connection
of the runner's own (:class:`DataVersionWatcher`: cheap, it reads a counter in
shared memory, no table). Behind both there is always the timed poll of
``wait_for_events``, so a missed hint only delays.

Waiters on the projections' progress (``wait_for``: read-your-writes) hear of
batches committed by workers in other processes the same way on SQLite; on
PostgreSQL each batch's commit sends a notification that a
:class:`ProgressListener` hears. Behind both, ``wait_for`` re-reads the
checkpoints every 0.25 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DataVersionWatcher", "ProgressListener", "Signal"]

log = logging.getLogger("eventvault.projections")


class Signal:
    """A wake-up for asyncio waiters that is never lost: take :meth:`waiter` before checking."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class DataVersionWatcher:
    """Notices commits made to a SQLite file by other connections (other processes too).

    ``PRAGMA data_version`` changes on a connection whenever another connection
    commits to the file; reading it touches no table, so polling it often costs
    next to nothing. Every change fires ``on_change`` (from this thread).
    """

    def __init__(self, path: str, interval: float, on_change: Callable[[], None]) -> None:
        self.path = path
        self.interval = interval
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="eventvault-data-version", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        last: int | None = None
        # A wait on the stop event, not a sleep: stop() ends it at once.
        while not self._stop.wait(self.interval):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                (value,) = conn.execute("PRAGMA data_version").fetchone()
                version = int(value)
            except sqlite3.Error as exc:
                log.debug("data_version watcher on %s: %s", self.path, exc)
                if conn is not None:
                    conn.close()
                conn = None
                continue
            # The first reading fires too: a commit made before it was noticed by nobody.
            if version != last:
                self.on_change()
            last = version
        if conn is not None:
            conn.close()


class ProgressListener:
    """Hears, on PostgreSQL, every projection batch committed (``ReadModels.announce_progress``).

    One LISTEN connection of its own, on the event loop; ``on_progress`` runs
    there for each notification. A lost connection is opened again (with a
    growing pause); meanwhile waiters fall back on their timed re-reads.
    """

    def __init__(self, conninfo: str, channel: str, on_progress: Callable[[], None]) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.on_progress = on_progress
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main(), name=f"listen {self.channel}")

    async def stop(self) -> None:
        """Close its connection. Never raises: the runner's own stop goes on after it."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception:  # a bug in the listener: say so, but finish stopping
                log.exception("the progress listener on %s had failed", self.channel)

    async def _main(self) -> None:
        import psycopg  # noqa: PLC0415 - only PostgreSQL users need psycopg
        from psycopg import sql  # noqa: PLC0415

        pause = 0.05
        while True:
            conn: Any = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=5
                )
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                pause = 0.05
                self.on_progress()  # batches committed while nobody listened
                async for _ in conn.notifies():
                    self.on_progress()
            except (psycopg.Error, OSError) as exc:  # the server went away: connect again
                log.debug("progress listener on %s: %s", self.channel, exc)
            finally:
                if conn is not None:
                    await conn.close()
            await asyncio.sleep(pause)  # a back-off between reconnects
            pause = min(pause * 2, 5.0)
