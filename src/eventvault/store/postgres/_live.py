"""Live reads: NOTIFY after appends (coalesced), and a LISTEN connection that wakes this store's waiters.

A notification is only a hint: waiters always poll the head as well
(:meth:`~eventvault.store.base.EventStore.wait_for_events`), so a lost one only
delays them. See the package documentation for why NOTIFY runs in its own
transaction, after the append's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql

from eventvault.errors import StoreUnavailable
from eventvault.store.postgres._connections import Conn, Connections, reason
from eventvault.store.postgres._libpq import Prepared
from eventvault.store.postgres._options import Options
from eventvault.store.postgres._schema import Statements

log = logging.getLogger("eventvault.store.postgres")


class Notifications:
    """Sends the schema's notifications and listens for them; ``wake`` wakes the store's waiters."""

    def __init__(
        self,
        db: Connections,
        statements: Statements,
        options: Options,
        wake: Callable[[], None],
        *,
        prepared: Prepared,
    ) -> None:
        self._db = db
        self._prepared = prepared
        self._sql = statements
        self._options = options
        self.channel = f"eventvault.{options.schema}"[:63]
        """The schema's notification channel."""
        self._wake = wake
        self.wakes = 0
        """How many times the waiters were woken (tests follow it)."""
        self.listening = False
        """Whether the LISTEN connection is up."""
        self._wake_handle: asyncio.TimerHandle | None = None
        self._listener: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._notify_task: asyncio.Task[None] | None = None
        self._notify_pending = False
        self._closed = False

    async def close(self) -> None:
        """Stop the listener and any pending notification, and wake every waiter."""
        self._closed = True
        self._stopping.set()
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        for task in (self._listener, self._notify_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.wake_all()

    def listen(self) -> None:
        """Start the LISTEN connection unless it runs (or notifications are off)."""
        if self._options.notify and (self._listener is None or self._listener.done()):
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    def wake_all(self) -> None:
        """Wake every waiter now."""
        self._wake_handle = None
        self.wakes += 1
        self._wake()

    def _on_notify(self) -> None:
        if self._wake_handle is not None:
            return  # a wake-up is already due: this notification joins it
        if self._options.notify_debounce == 0:
            self.wake_all()
        else:
            loop = asyncio.get_running_loop()
            self._wake_handle = loop.call_later(self._options.notify_debounce, self.wake_all)

    def appended(self) -> None:
        """Tell waiters the log may have moved: this store's at once, others by NOTIFY (coalesced)."""
        if self._closed:
            return
        self._on_notify()
        if not self._options.notify:
            return
        self._notify_pending = True
        if self._notify_task is None or self._notify_task.done():
            self._notify_task = asyncio.get_running_loop().create_task(self._send_notifies())

    async def _send_notifies(self) -> None:
        pool = self._db.pool
        while self._notify_pending and pool is not None and not self._closed:
            # Appends that commit while this notification is in flight are covered
            # by the next one: one round trip at a time, however many appends.
            self._notify_pending = False
            try:
                conn = await self._db.acquire(pool)
                try:
                    await self._prepared.execute(conn, self._sql.hot.notify, {"channel": self.channel})
                finally:
                    await self._db.release(pool, conn)
            except psycopg.Error as exc:
                # Only a hint: readers poll as well.
                log.debug("notify on %s failed: %s", self.channel, reason(exc))
                return
            # Listeners wake notify_debounce after a notification anyway, so sending
            # them closer together buys nothing, and each costs a round trip (with
            # one writer, as much client CPU as the append itself, measured). The
            # next one waits that long and covers every append made meanwhile.
            if self._options.notify_debounce > 0:
                await asyncio.sleep(self._options.notify_debounce)

    async def _listen(self) -> None:
        """Keep a LISTEN connection open for as long as the store is; reconnect when it drops."""
        backoff = 0.05
        while not self._closed:
            conn: Conn | None = None
            try:
                conn = await self._db.connect("listen")
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                self.listening = True
                backoff = 0.05
                self.wake_all()  # appends made while nobody listened were not announced
                async for _ in conn.notifies():
                    self._on_notify()
            except (psycopg.Error, StoreUnavailable) as exc:
                log.debug("listener on %s: %s; polling until it reconnects", self.channel, reason(exc))
            finally:
                self.listening = False
                if conn is not None:
                    await conn.close()
            self.wake_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stopping.wait()
            backoff = min(backoff * 2, max(self._options.poll_interval, 0.05))
