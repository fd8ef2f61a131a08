"""The writer: one write connection, group commit, on the writer thread or the event loop's.

See the package documentation ("One writer") and decision 0014 for where a
group commits and why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from eventvault.domain import EventRegistry
from eventvault.errors import EventVaultError, InvalidInput
from eventvault.store.base import PreparedEvent
from eventvault.store.records import AppendCondition, AppendResult, Checkpoint, ExpectedVersion
from eventvault.store.sqlite import filelock, schema
from eventvault.store.sqlite.core import _SQLiteCore
from eventvault.store.sqlite.errors import SQLITE_BUSY, primary_code
from eventvault.store.sqlite.jobs import STOP, AppendJob, Call, Delivery, Job, Outcome, post, settle
from eventvault.store.sqlite.options import check_query_text
from eventvault.store.sqlite.writes import Append, Conflict, append_together, decide_conflict, write_append

log = logging.getLogger("eventvault.store.sqlite")

_MAX_BATCH: Final = 512  # appends per group commit: bounds how long one transaction holds the lock
_INLINE_COMMIT_US: Final = 1000.0  # writer=auto commits on the loop's thread while commits take less
_COMMIT_SAMPLE_MAX_US: Final = 2 * _INLINE_COMMIT_US  # one slow COMMIT (a checkpoint) counts as this at most
_RETRY_INLINE_S: Final = 1.0  # writer=auto: commits on the writer thread try the loop again this often
_ALONE_AFTER: Final = 8  # writer=auto: after this many appends in a row nobody joined, skip the yield
_ALONE_LOOK_EVERY: Final = 16  # ... except on every this-many-th append, to notice a second writer
_ALONE_HOLD_S: Final = 0.005  # ... and once the loop has had no turn from appends for this long


def moved_average(average_us: float, sample_us: float) -> float:
    """The moving average of COMMIT times after one more, which counts as _COMMIT_SAMPLE_MAX_US at most.

    A lone slow commit (a WAL checkpoint syncing the database file) moves the
    average by a fifth of that bound; a run of slow ones takes it over the
    inline limit within three commits.
    """
    return average_us + (min(sample_us, _COMMIT_SAMPLE_MAX_US) - average_us) * 0.2


@dataclass(slots=True)
class SQLiteStats:
    """Counters kept by the writer, for tests and benchmarks (read-only to others)."""

    transactions: int = 0
    """Write transactions committed."""
    inline_transactions: int = 0
    """Of those, the ones committed on an event loop's thread (``writer=auto``)."""
    appends: int = 0
    """Appends those transactions stored (idempotent retries write nothing and are not counted)."""
    events: int = 0
    """Events those appends stored."""
    conflicts: int = 0
    """Appends refused alone inside a batch (wrong version, event id stored elsewhere)."""
    largest_batch: int = 0
    """The most writes one transaction carried."""


class _Done(NamedTuple):
    """What one write job of a transaction came to."""

    ok: bool
    value: Any
    """Its result, or the exception its caller gets."""
    events: int
    """Events it stored (0: none, such as an idempotent retry or a snapshot)."""


class _SQLiteWriter(_SQLiteCore):
    """The write connection and the ways a group of writes reaches it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registry: EventRegistry | None = None,
        **options: Any,
    ) -> None:
        super().__init__(path, registry=registry, **options)
        self.stats = SQLiteStats()
        """Writer counters: ``stats.transactions < stats.appends`` proves group commit."""
        # The write connection: used by the writer thread, or by an event loop's
        # thread for a group committed there, never by two at once (_wlock).
        self._wlock = threading.Lock()
        self._wcur: sqlite3.Cursor | None = None
        # The file's write turn, shared with this process's other writers of it (filelock).
        self._turn = filelock.write_turn(self.path)
        self._wait_locks = True  # its busy timeout: True = busy_timeout, False = 0
        self._commit_us = 0.0  # moving average of how long COMMIT takes on an event loop's thread
        self._inline_at = time.monotonic()  # when a commit last ran on an event loop's thread
        self._pending: dict[asyncio.AbstractEventLoop, list[Job]] = {}  # writer=auto: each loop's next group
        # writer=auto: the loop whose appends last led groups nobody joined, and how many in a row.
        self._alone_loop: asyncio.AbstractEventLoop | None = None
        self._alone_run = 0
        self._alone_turn = 0.0  # loop.time() when an append last let that loop run other tasks

    # -- the writer thread ---------------------------------------------------

    def _writer_main(self, ready: concurrent.futures.Future[None]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect(shared=True)
            if not self._memory:
                schema.use_wal(conn, self.path, self.busy_timeout)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            schema.migrate(conn, self.path)
        except BaseException as exc:  # noqa: BLE001 - handed to open(), which raises it
            if conn is not None:
                conn.close()
            ready.set_exception(self._map_error(exc) if isinstance(exc, sqlite3.Error) else exc)
            return
        cur = conn.cursor()
        self._wcur = cur
        ready.set_result(None)
        try:
            self._writer_loop(cur)
        finally:
            with self._wlock:  # a group committing on a loop's thread finishes first
                self._wcur = None
                conn.close()

    def _writer_loop(self, cur: sqlite3.Cursor) -> None:
        while True:
            batch, stop = self._take_batch()
            if self._closed:
                self._fail_closed(batch)
            elif batch:
                held: list[Delivery] = []
                try:
                    with self._wlock:
                        self._held.deliveries = held
                        try:
                            self._run_batch(cur, batch)
                        finally:
                            self._held.deliveries = None
                finally:
                    for delivery in held:
                        post(delivery)
            if stop:
                return

    def _take_batch(self) -> tuple[list[Job], bool]:
        """Wait for a job, then take every job already waiting: the group of one commit."""
        job = self._wq.get()
        if job is STOP:
            return [], True
        batch = [job]
        q = self._wq
        # Only this thread takes from the queue, so "not empty" means get() won't block.
        while len(batch) < _MAX_BATCH and not q.empty():
            job = q.get()
            if job is STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _run_batch(self, cur: sqlite3.Cursor, batch: list[Job]) -> None:
        if not self._wait_locks:
            cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._wait_locks = True
        writes: list[Job] = []
        for job in batch:
            if isinstance(job, Call) and not job.write:
                # Reads that share the writer's connection (readers=0) run
                # outside any write transaction: they must never see
                # writes that are not committed yet.
                self._run_read(cur, job)
            elif not job.future.cancelled():
                writes.append(job)
        if writes:
            self._commit_batch(cur, writes)

    # -- one transaction ---------------------------------------------------------

    def _commit_batch(self, cur: sqlite3.Cursor, jobs: list[Job], *, inline: bool = False) -> bool:
        """Run ``jobs`` in one transaction, each in its own savepoint, and commit once.

        Returns False, having done nothing, when ``inline`` and another writer
        holds the file (the inline path never waits for one).
        """
        if inline:
            if not self._turn.acquire(blocking=False):
                return False  # this process's read models are writing: the writer thread waits
        else:
            try:
                filelock.take(self._turn, self.busy_timeout)
            except sqlite3.OperationalError as exc:
                self._fail(jobs, exc)
                return True
        try:
            return self._transaction(cur, jobs, inline=inline)
        finally:
            self._turn.release()

    def _transaction(self, cur: sqlite3.Cursor, jobs: list[Job], *, inline: bool) -> bool:
        """:meth:`_commit_batch`, holding the file's write turn."""
        conn = cur.connection
        try:
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if inline and primary_code(exc) == SQLITE_BUSY:
                    return False
                raise
            now = time.time_ns() // 1000
            done = self._append_together(cur, jobs, now) if len(jobs) > 1 else None
            if done is None:
                single = len(jobs) == 1  # one job: its transaction is its savepoint
                done = [self._run_write(cur, job, now, single=single) for job in jobs]
            if conn.in_transaction:  # not when a single job rolled back
                self._commit(cur, inline=inline)
        except Exception as exc:  # every caller of the batch gets it
            # The batch is lost as a whole: whatever failed (the lock, the disk,
            # COMMIT itself) may have undone the earlier savepoints too.
            if conn.in_transaction:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    log.warning("ROLLBACK after a failed batch failed too", exc_info=True)
            if not isinstance(exc, sqlite3.Error):
                log.error("the SQLite writer failed a batch", exc_info=exc)  # noqa: TRY400 - exc_info given
            self._fail(jobs, exc)
            return True
        self._finish_batch(jobs, done)
        return True

    def _fail(self, jobs: list[Job], exc: Exception) -> None:
        """Every job of a batch gets ``exc`` (as the store's error if it is SQLite's)."""
        for job in jobs:
            error = self._map_error(exc) if isinstance(exc, sqlite3.Error) else exc
            self._deliver(Delivery(job.loop, [Outcome(job.future, ok=False, value=error)]))

    def _commit(self, cur: sqlite3.Cursor, *, inline: bool) -> None:
        """COMMIT, timed on a loop's thread: writer=auto keeps commits off the event loop while they are slow.

        Only those are timed. On the writer thread the time would include its
        wait for the GIL after the disk's sync, up to the interpreter's switch
        interval while the loop is busy, and so would keep every commit on the
        writer thread under load, however fast the disk.
        """
        started = time.perf_counter()
        cur.execute("COMMIT")
        if inline:
            self._commit_us = moved_average(self._commit_us, (time.perf_counter() - started) * 1e6)
            self._inline_at = time.monotonic()
        self.stats.transactions += 1
        self.stats.inline_transactions += inline

    def _quick_commits(self) -> bool:
        """writer=auto: whether commits are quick enough for the loop's thread, or due a try there.

        With commits on the writer thread, one group a second is committed on
        the loop's thread again, so that a disk that is fast again (or was slow
        for a moment) brings them back.
        """
        return self._commit_us < _INLINE_COMMIT_US or time.monotonic() - self._inline_at >= _RETRY_INLINE_S

    @staticmethod
    def _append_together(cur: sqlite3.Cursor, jobs: list[Job], now: int) -> list[_Done] | None:
        """A batch of appends only, all holding, in a few statements (writes.append_together); else None."""
        appends: list[Append] = []
        for job in jobs:
            if not isinstance(job, AppendJob):
                return None
            appends.append(job.append)
        results = append_together(cur, appends, now)
        if results is None:
            return None
        return [_Done(ok=True, value=r, events=len(r.positions)) for r in results]

    @staticmethod
    def _run_write(cur: sqlite3.Cursor, job: Job, now: int, *, single: bool) -> _Done:
        """Run one write job (in a savepoint of its own unless ``single``)."""
        if not single:
            cur.execute("SAVEPOINT job")
        try:
            if isinstance(job, AppendJob):
                result = write_append(cur, job.append, now)
                done = _Done(ok=True, value=result, events=len(result.positions))
            else:
                value = job.fn(cur, *job.args)
                # A delete stores its $StreamDeleted event: listeners hear of it as of an append.
                events = len(value.positions) if isinstance(value, AppendResult) else 0
                done = _Done(ok=True, value=value, events=events)
        except Conflict as conflict:
            cur.execute("ROLLBACK" if single else "ROLLBACK TO job")
            try:
                done = _Done(ok=True, value=decide_conflict(cur, conflict), events=0)
            except EventVaultError as exc:
                done = _Done(ok=False, value=exc, events=0)
        if not single:
            cur.execute("RELEASE job")
        return done

    def _finish_batch(self, jobs: list[Job], done: list[_Done]) -> None:
        """After COMMIT: count, tell the listeners, then resolve the callers' futures."""
        stats = self.stats
        stats.largest_batch = max(stats.largest_batch, len(jobs))
        by_loop: dict[asyncio.AbstractEventLoop, Delivery] = {}
        head = 0
        # The types of the events committed, for typed waiters (None: not known, or nobody waits).
        types: set[str] | None = set() if self._wait_loop is not None else None
        for job, (ok, value, events) in zip(jobs, done, strict=True):
            if events:
                stats.appends += 1
                stats.events += events
                head = value.checkpoint.position  # positions rise in the order of the jobs
                if not isinstance(job, AppendJob):
                    types = None
                elif types is not None:
                    types.update(e.event_type for e in job.append.events)
            elif not ok:
                stats.conflicts += 1
            delivery = by_loop.get(job.loop)
            if delivery is None:
                delivery = by_loop[job.loop] = Delivery(job.loop)
            delivery.outcomes.append(Outcome(job.future, ok, value))
        if head:
            # Before the futures: when an append returns, listeners have heard of it.
            # Waiters on a loop that also gets outcomes are woken by the same
            # delivery, first: one wake-up of that loop per commit, not two.
            waiters = by_loop.get(self._wait_loop) if self._wait_loop is not None else None
            if waiters is not None:
                waiters.wake = functools.partial(self._wake_waiters, types)
                self._notify(Checkpoint(0, head), announce=False)
            else:
                self._notify(Checkpoint(0, head), types)
        for delivery in by_loop.values():
            self._deliver(delivery)

    # -- groups committed on the event loop's thread (writer=auto) ------------------

    async def _append_conditioned(
        self,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        condition: AppendCondition | None,
    ) -> AppendResult:
        """An append with tags or a condition: the same paths as :meth:`_append`.

        The condition is checked by the write itself (writes.write_append), in
        the transaction that inserts, so a failing one fails only its own append.
        """
        if condition is not None:
            check_query_text(condition.fail_if_events_match)
        return await self._append(stream_id, events, expected, condition, tagged=True)

    async def _append(
        self,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        condition: AppendCondition | None = None,
        *,
        tagged: bool = False,
    ) -> AppendResult:
        """Append to the writer thread's queue (writer=thread), or as one of this loop's group.

        A group is the appends made while the loop runs its ready tasks. The
        first of them leads it: it lets every other task that is ready to run
        take its turn (one trip round the loop), and any append they make joins
        the group; then it commits the group (here, if that is quick, else on
        the writer thread). A leader that nobody joined commits alone, with no
        future to resolve.

        A writer that is alone skips that trip: once ``_ALONE_AFTER`` appends in
        a row on this loop found nobody to join them, an append commits at once,
        except every ``_ALONE_LOOK_EVERY``-th and any made ``_ALONE_HOLD_S``
        after the last trip, which still yield (so other tasks are not held up
        for long, and a second writer is noticed); the first group another task
        joins ends the run, and appends yield again.
        """
        # check_stream_id (EventStore.append) has refused ids SQLite cannot store.
        if not self._opened:
            await self.open()
        append = Append(stream_id, events, expected, condition, tagged)
        if self.writer == "thread":
            result: AppendResult = await self._submit_append(append)
            return result
        loop = asyncio.get_running_loop()
        group = self._pending.get(loop)
        if group is not None:
            fut: asyncio.Future[AppendResult] = loop.create_future()
            group.append(AppendJob(append, fut, loop))
            return await fut
        if self._alone_loop is not loop:
            self._alone_loop, self._alone_run = loop, 0
        run = self._alone_run
        self._alone_run = run + 1  # one more append alone, unless others join it below
        if (
            run < _ALONE_AFTER
            or run % _ALONE_LOOK_EVERY == 0
            or loop.time() - self._alone_turn >= _ALONE_HOLD_S
        ):
            group = self._pending[loop] = []
            try:
                await asyncio.sleep(0)
            except BaseException:
                # Cancelled: this append is withdrawn, the ones that joined still commit.
                loop.call_soon(self._commit_group, loop)
                raise
            self._alone_turn = loop.time()
            if group:
                self._alone_run = 0
            else:
                del self._pending[loop]
        else:
            group = []
        if not group:
            done = self._append_alone(loop, append)
            if done is not None:
                return done
        fut = loop.create_future()
        group.insert(0, AppendJob(append, fut, loop))  # first made, first in the log
        self._pending[loop] = group
        self._commit_group(loop)
        return await fut

    def _append_alone(self, loop: asyncio.AbstractEventLoop, append: Append) -> AppendResult | None:
        """One append in a transaction of its own, on this thread; None: take the group path.

        The group path is taken when commits are slow, the writer thread is
        busy, another process holds the write lock, or the append conflicts
        (the group path tells an idempotent retry from a conflict).
        """
        if not self._quick_commits() or not self._wq.empty() or not self._wlock.acquire(blocking=False):
            return None
        if not self._turn.acquire(blocking=False):  # this process's read models are writing
            self._wlock.release()
            return None
        try:
            cur = self._inline_writer_cursor()
            if cur is None:
                return None
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if primary_code(exc) == SQLITE_BUSY:
                    return None
                raise self._map_error(exc) from exc
            try:
                result = write_append(cur, append, time.time_ns() // 1000)
                self._commit(cur, inline=True)
            except Conflict:
                cur.execute("ROLLBACK")
                return None
            except BaseException as exc:
                if cur.connection.in_transaction:
                    cur.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._map_error(exc) from exc
                raise
        finally:
            self._turn.release()
            self._wlock.release()
        self._committed_alone(loop, result, append)
        return result

    def _committed_alone(self, loop: asyncio.AbstractEventLoop, result: AppendResult, append: Append) -> None:
        """Count an append committed alone on ``loop``'s thread and tell who listens."""
        stats = self.stats
        stats.appends += 1
        stats.events += len(append.events)
        stats.largest_batch = stats.largest_batch or 1
        if self._wait_loop is loop:
            self._wake_waiters({e.event_type for e in append.events})
            self._notify(result.checkpoint, announce=False)
        elif self._wait_loop is not None or self._listeners:
            self._notify(result.checkpoint, {e.event_type for e in append.events})

    def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the appends this loop gathered: here if that is quick, else on the writer thread."""
        jobs = [job for job in self._pending.pop(loop) if not job.future.cancelled()]
        if not jobs:
            return
        if (
            self._quick_commits()
            and not self._closed
            and self._wq.empty()
            and self._wlock.acquire(blocking=False)
        ):
            held: list[Delivery] = []
            try:
                cur = self._inline_writer_cursor()
                committed = False
                if cur is not None:
                    self._held.deliveries = held
                    try:
                        committed = self._commit_batch(cur, jobs, inline=True)
                    finally:
                        self._held.deliveries = None
            finally:
                self._wlock.release()
            # Every job of the group is this loop's, and this is its thread.
            for delivery in held:
                settle(delivery)
            if committed:
                return
        with self._lock:  # nothing may enter the queue after close() put STOP in it
            if not self._closed:
                for job in jobs:
                    self._wq.put(job)
                return
        self._fail_closed(jobs)

    def _inline_writer_cursor(self) -> sqlite3.Cursor | None:
        """The write connection's cursor, set never to wait for other processes; None once closed.

        Call holding ``_wlock``.
        """
        cur = self._wcur
        if cur is None or self._closed:
            return None
        if self._wait_locks:  # an event loop's thread never sleeps on another process's lock
            cur.execute("PRAGMA busy_timeout = 0")
            self._wait_locks = False
        return cur

    # -- who hears of commits ---------------------------------------------------

    def _notify(
        self, head: Checkpoint, event_types: Collection[str] | None = None, *, announce: bool = True
    ) -> None:
        if announce:
            self._announce_append(event_types)  # wakes this store's wait_for_events
        for listener in self._listeners:
            try:
                listener(head)
            except Exception:
                log.exception("a commit listener of the SQLite store failed")

    def add_commit_listener(self, listener: Callable[[Checkpoint], None]) -> Callable[[], None]:
        """Call ``listener(head)`` after each transaction of this store that stored events.

        ``head`` is the checkpoint of the last event that transaction committed.
        The listener runs on the thread that committed (the writer thread, or an
        event loop's thread with ``writer=auto``) before the appends return, so it
        must be quick, must not block and must not call the store; to wake
        asyncio code, hand over with ``loop.call_soon_threadsafe``. Exceptions are
        logged. Commits made by other processes are not seen: a follower of the
        log still polls, and uses this only to wake up early. Returns a function
        that removes the listener.
        """
        if not callable(listener):
            raise InvalidInput(f"a commit listener is callable, got {listener!r}")
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return remove
