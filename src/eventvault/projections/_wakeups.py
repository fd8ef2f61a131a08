"""Wake-ups for projection workers and for waiters on their progress.

An append through the same store object wakes the workers at once; appends by
other processes are seen through the store's own mechanism (LISTEN/NOTIFY on
PostgreSQL) and, on SQLite, by polling ``PRAGMA data_version`` on a connection
of the runner's own (:class:`DataVersionWatcher`: cheap, it reads a counter in
shared memory, no table). Behind both there is always the timed poll of
``wait_for_events``, so a missed hint only delays.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable

__all__ = ["DataVersionWatcher", "Signal"]

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
