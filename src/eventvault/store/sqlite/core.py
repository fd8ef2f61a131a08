"""The store's parts that the writer and the reads share: options, threads, queues, connections."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Self

from eventvault.domain import EventRegistry
from eventvault.errors import InvalidStoreURL, StoreClosed, StoreError
from eventvault.store.base import EventStore
from eventvault.store.records import Checkpoint
from eventvault.store.sqlite.errors import is_busy, map_error
from eventvault.store.sqlite.jobs import STOP, AppendJob, Call, Delivery, Job, Outcome, fail, post
from eventvault.store.sqlite.keys import SQLiteKeyStore
from eventvault.store.sqlite.options import parse_options
from eventvault.store.sqlite.writes import Append

log = logging.getLogger("eventvault.store.sqlite")

NOT_INLINE: Final = object()
"""What :meth:`_SQLiteCore._run_inline` returns when the read must go to a reader thread."""


class _SQLiteCore(EventStore):
    """Lifecycle, queues, reader threads and the callers' own read connections."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registry: EventRegistry | None = None,
        **options: Any,
    ) -> None:
        super().__init__(registry=registry)
        self.keys = SQLiteKeyStore(self)
        path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise InvalidStoreURL(f"a SQLite database path is a non-empty str, got {path!r}")
        self._memory = path == ":memory:"
        self.path = path if self._memory else str(Path(path).resolve())
        """The database file (absolute), or ``:memory:``."""
        self.synchronous, self.busy_timeout, self.readers, self.writer, read_models = parse_options(options)
        if read_models is not None and self._memory:
            raise InvalidStoreURL("read_models needs a store in a file: sqlite:///:memory: has no folder")
        self.read_models_path = (
            self.path if read_models is None else str((Path(self.path).parent / read_models).resolve())
        )
        """The SQLite file of the read models beside this store (``read_models_for``): its own by default."""
        if read_models is not None:
            if self.read_models_path == self.path:
                raise InvalidStoreURL(
                    f"read_models names the store's own file ({self.path}): leave it out for that"
                )
            folder = Path(self.read_models_path).parent
            if not folder.is_dir():
                raise InvalidStoreURL(f"read_models: the folder {folder} does not exist")
        if self._memory and "readers" in options and self.readers:
            raise InvalidStoreURL(
                "readers must be 0 for sqlite:///:memory: (each connection to :memory: is a database "
                f"of its own), got {options['readers']!r}"
            )
        if self._memory:
            self.readers = 0

        self._lock = threading.Lock()  # orders submissions against close()
        self._open_lock = threading.Lock()  # one open at a time; close waits for it
        self._opened = False
        self._threads: list[threading.Thread] = []
        self._wq: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._rq: queue.SimpleQueue[Job | None] = self._wq if self.readers == 0 else queue.SimpleQueue()
        self._listeners: tuple[Callable[[Checkpoint], None], ...] = ()
        # Small reads run on the caller's thread, on a connection of that thread's own.
        self._inline = threading.local()
        self._inline_cursors: list[tuple[sqlite3.Cursor, threading.Lock]] = []
        # While a thread holds the write connection, the deliveries it makes wait
        # here (per thread) until it has let go, so a caller it wakes finds the
        # write connection free (_deliver).
        self._held = threading.local()

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> Self:
        """Open the file, switch it to WAL and create or migrate the schema. Idempotent.

        A closed store stays closed (StoreClosed): make a new one to open the file again.
        """
        self._check_open()
        if not self._opened:
            await asyncio.to_thread(self._open_sync)
        return self

    def _open_sync(self) -> None:
        with self._open_lock:
            if self._closed:
                raise self._closed_error()
            if self._opened:
                return
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            writer = threading.Thread(
                target=self._writer_main, args=(ready,), name="eventvault-sqlite-writer", daemon=True
            )
            writer.start()
            try:
                ready.result()
            except BaseException:
                writer.join()
                raise
            threads = [writer]
            for i in range(self.readers):
                reader = threading.Thread(
                    target=self._reader_main, name=f"eventvault-sqlite-reader-{i}", daemon=True
                )
                reader.start()
                threads.append(reader)
            self._threads = threads
            self._opened = True

    def _writer_main(self, ready: concurrent.futures.Future[None]) -> None:
        """The writer thread: sets ``ready`` once the file is open and migrated (writer.py)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop the threads and close every connection. Idempotent.

        Calls still waiting in a queue, and every call after this, raise StoreClosed.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._wq.put(STOP)
                if self._rq is not self._wq:
                    for _ in range(self.readers):
                        self._rq.put(STOP)
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        with self._open_lock:  # an open in progress finishes (and then sees the STOPs) first
            threads, self._threads = self._threads, []
        for t in threads:
            t.join()
        with self._lock:
            inline, self._inline_cursors = self._inline_cursors, []
        for cur, lock in inline:
            with lock:  # a read in progress on another thread finishes first
                cur.connection.close()

    def _closed_error(self) -> StoreClosed:
        return StoreClosed(f"this sqlite store ({self.path}) is closed")

    def _fail_closed(self, jobs: list[Job]) -> None:
        for job in jobs:
            fail(job, self._closed_error())

    def _connect(self, *, shared: bool = False) -> sqlite3.Connection:
        # isolation_level=None: the package's own BEGIN/COMMIT/SAVEPOINT statements
        # are the only transaction control; sqlite3 must not insert its own.
        # timeout sets SQLite's busy timeout: wait for other processes' locks.
        return sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=not shared
        )

    def _map_error(self, exc: sqlite3.Error) -> StoreError:
        return map_error(exc, self.path, self.busy_timeout)

    # -- handing outcomes back ------------------------------------------------

    def _deliver(self, delivery: Delivery) -> None:
        """Hand ``delivery`` to its loop: at once, or once this thread lets go of the write connection."""
        held: list[Delivery] | None = getattr(self._held, "deliveries", None)
        if held is None:
            post(delivery)
        else:
            held.append(delivery)

    # -- the reader threads --------------------------------------------------

    def _reader_main(self) -> None:
        cur: sqlite3.Cursor | None = None
        try:
            while True:
                job = self._rq.get()
                if job is STOP:
                    return
                if self._closed:
                    self._fail_closed([job])
                    continue
                if cur is None:
                    try:
                        cur = self._connect_reader()
                    except sqlite3.Error as exc:
                        fail(job, self._map_error(exc))
                        continue
                self._run_read(cur, job)
        finally:
            if cur is not None:
                cur.connection.close()

    def _connect_reader(self) -> sqlite3.Cursor:
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only = ON")  # a reader that writes is a bug: fail loudly
        except BaseException:
            conn.close()
            raise
        return conn.cursor()

    def _run_read(self, cur: sqlite3.Cursor, job: Job) -> None:
        assert isinstance(job, Call)  # noqa: S101 - appends only ever go to the writer's queue
        fut = job.future
        if fut.cancelled():
            return
        try:
            outcome = Outcome(fut, ok=True, value=job.fn(cur, *job.args))
        except sqlite3.Error as exc:
            outcome = Outcome(fut, ok=False, value=self._map_error(exc))
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            outcome = Outcome(fut, ok=False, value=exc)
        finally:
            if cur.connection.in_transaction:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    log.warning("ending a read transaction failed", exc_info=True)
        self._deliver(Delivery(job.loop, [outcome]))

    # -- submitting ------------------------------------------------------------

    def _put(self, q: queue.SimpleQueue[Job | None], job: Job) -> None:
        with self._lock:  # nothing may enter a queue after close() put STOP in it
            if self._closed:
                raise self._closed_error()
            q.put(job)

    def _submit(
        self,
        q: queue.SimpleQueue[Job | None],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        write: bool,
    ) -> asyncio.Future[Any]:
        """Queue ``fn(cursor, *args)`` on ``q``; the future of its result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._put(q, Call(fn, args, fut, loop, write))
        return fut

    def _submit_append(self, append: Append) -> asyncio.Future[Any]:
        """Queue ``append`` for the writer thread; the future of its AppendResult."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._put(self._wq, AppendJob(append, fut, loop))
        return fut

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._opened:
            await self.open()
        return await self._submit(self._rq, fn, args, write=False)

    async def _on_writer(self, fn: Callable[[sqlite3.Cursor], Any]) -> Any:
        """Run ``fn(cursor)`` on the writer's connection, outside any transaction (tests, tools)."""
        if not self._opened:
            await self.open()
        return await self._submit(self._wq, fn, (), write=False)

    # -- small reads on the caller's thread ---------------------------------------

    def _inline_ok(self) -> bool:
        # With readers=0 (and :memory:) every read shares the writer's connection.
        return self._opened and self.readers > 0

    def _run_inline(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(cursor, *args)`` on this thread's own read connection; NOT_INLINE if it is busy.

        A short read costs less than the trip to a reader thread and back (two
        thread wake-ups and a write to the event loop's self-pipe: about 100 us
        here, three times the read), so reads that are small by construction run
        here: a stream's first rows, a version, the head, a snapshot. WAL lets
        the read proceed while the writer works. The connection never waits for
        a lock (busy timeout 0): if SQLite answers busy, the caller takes the
        reader thread instead, so this thread (an event loop) never sleeps.
        """
        entry: tuple[sqlite3.Cursor, threading.Lock] | None = getattr(self._inline, "entry", None)
        if entry is None:
            entry = self._open_inline()
            if entry is None:
                return NOT_INLINE
        cur, lock = entry
        with lock:
            if self._closed:
                raise self._closed_error()
            try:
                return fn(cur, *args)
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    return NOT_INLINE
                raise self._map_error(exc) from exc
            except sqlite3.Error as exc:
                raise self._map_error(exc) from exc
            finally:
                if cur.connection.in_transaction:
                    cur.execute("ROLLBACK")

    def _open_inline(self) -> tuple[sqlite3.Cursor, threading.Lock] | None:
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            return None  # the reader threads will report what is wrong
        entry = (conn.cursor(), threading.Lock())
        with self._lock:
            if self._closed:
                conn.close()
                raise self._closed_error()
            self._inline_cursors.append(entry)
        self._inline.entry = entry
        return entry

    def __repr__(self) -> str:
        return f"<SQLiteEventStore {self.path}{' closed' if self._closed else ''}>"
