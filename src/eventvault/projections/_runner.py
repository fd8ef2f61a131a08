"""The projection runner: catch-up, live, leases, fencing, failures, rebuild, status.

One :class:`ProjectionRunner` per process runs any number of projections. For
each, a worker task reads the global log from its checkpoint and applies pages
of events in transactions that also move the checkpoint, so a crash anywhere
never loses or double-applies an event.

Waking up: an append through the same store object wakes the workers at once;
appends by other processes are seen through the store's own mechanism
(LISTEN/NOTIFY on PostgreSQL) and, on SQLite, by polling ``PRAGMA data_version``
on a connection of the runner's own (cheap: it reads a counter in shared
memory, no table). Behind both there is always the timed poll of
``wait_for_events``, so a missed hint only delays.

Scale-out: a projection's streams are split into partitions by a stable hash of
the stream id. Workers (in any number of processes, on any machines that share
the database) hold leases on partitions in the database. Every takeover bumps
the partition's token; every checkpoint write checks it in the batch's own
transaction, so a worker that lost its lease (paused, partitioned, presumed
dead) can never commit again: its whole batch rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal, Self, TypeVar

from eventvault.errors import EventVaultError, InvalidInput, StoreError, StoreUnavailable
from eventvault.projections._db import ReadModels, read_models_for
from eventvault.projections._projection import Projection, Session, partition_of
from eventvault.store.base import EventStore
from eventvault.store.records import START, Checkpoint, HorizonLag, RecordedEvent

__all__ = ["ProjectionError", "ProjectionRunner", "ProjectionStatus", "RebuildProgress"]

log = logging.getLogger("eventvault.projections")

T = TypeVar("T")
State = Literal["starting", "catching_up", "live", "idle", "retrying", "failed", "stopped"]
_ADVISORY_KEY: Final = 0x6576_7072  # "evpr": serializes projection DDL on PostgreSQL
_MAX_BACKOFF: Final = 5.0
_WAIT_FOR_POLL: Final = 0.25  # wait_for re-reads checkpoints this often (progress made elsewhere)


@dataclass(frozen=True, slots=True)
class ProjectionError:
    """Why a projection stopped (or is retrying): the event it could not apply and the error.

    For a database error that is being retried, the event fields are None.
    """

    message: str
    position: int | None
    checkpoint: str | None
    event_id: str | None
    at: float | None
    event_type: str | None = None
    stream_id: str | None = None


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """A rebuild's progress: events done of total, rate and time left."""

    generation: int
    state: Literal["running", "done", "failed"]
    done: int
    total: int
    events_per_second: float
    eta_seconds: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection is, against the head of the log."""

    name: str
    state: State
    generation: int
    version: int
    checkpoint: str
    head: str
    lag_events: int
    """Events not yet applied: exact on SQLite, close on PostgreSQL (sequence gaps)."""
    lag_seconds: float
    """How long the oldest event not yet applied has been in the log."""
    events_per_second: float | None
    """Measured in this process over the last seconds; None if no worker runs here."""
    applied: int
    partitions: int
    owned_partitions: tuple[int, ...]
    last_error: ProjectionError | None
    rebuild: RebuildProgress | None
    workers: tuple[str, ...] = ()
    """The workers (in any process) holding a live lease on a partition."""
    held_back: HorizonLag | None = None
    """Committed events no reader can see yet, and the event writer holding them (PostgreSQL); else None."""


class _Fenced(Exception):
    """Another worker took a partition over: this worker's batch was rolled back."""


class _Abandoned(Exception):
    """The generation this rebuild was building is gone (another rebuild replaced it)."""


class _HandlerFailed(Exception):
    """A handler raised on ``event``, at ``index`` in the batch.

    With ``whole_batch``, the projection's begin_batch or end_batch raised: that
    names no event, and ``event`` is the batch's first.
    """

    def __init__(
        self, index: int, event: RecordedEvent, cause: BaseException, *, whole_batch: bool = False
    ) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.index = index
        self.event = event
        self.cause = cause
        self.whole_batch = whole_batch


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, n: int) -> None:
        now = time.monotonic()
        self.samples.append((now, n))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()

    def value(self) -> float:
        now = time.monotonic()
        self._trim(now)
        if not self.samples:
            return 0.0
        span = max(now - self.samples[0][0], 1.0)
        return sum(n for _, n in self.samples) / span


class _Signal:
    """A wake-up for asyncio waiters that is never lost: take :meth:`waiter` before checking."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class _DataVersionWatcher:
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
                version = int(conn.execute("PRAGMA data_version").fetchone()[0])
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


def _cp(row_tx: int, row_pos: int) -> Checkpoint:
    return Checkpoint(int(row_tx), int(row_pos))


class _Worker:
    """Runs one projection (one generation) in this process."""

    def __init__(
        self, runner: ProjectionRunner, projection: Projection, generation: int, *, rebuild: bool = False
    ) -> None:
        self.runner = runner
        self.projection = projection
        self.cls = type(projection)
        self.generation = generation
        self.rebuild = rebuild
        self.owned: dict[int, int] = {}  # partition -> lease token
        self.cps: dict[int, Checkpoint] = {}
        self.state: State = "starting"
        self.error: ProjectionError | None = None
        self.rate = _Rate()
        self.task: asyncio.Task[None] | None = None
        self.last_lease_sync = -math.inf
        self.handlers = runner.handlers_of(projection)
        self.types = tuple(self.handlers)
        # One thread (so one connection) per worker: its batches never wait for
        # another projection's, and a slow handler blocks only its own projection.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"eventvault-{self.cls.name}")
        # rebuild progress
        self.started = time.monotonic()
        self.swapped = False
        self.finished: RebuildProgress | None = None
        """The progress as it stood at the swap: a finished rebuild's total and rate stop there."""

    @property
    def name(self) -> str:
        return self.cls.name

    def checkpoint(self) -> Checkpoint:
        return min(self.cps.values()) if self.cps else START

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            # A bug (ours or a backend's), not a handler failure: say so, never die silently.
            log.exception("%s: the worker crashed", self.name)
            self.error = ProjectionError(
                f"the worker crashed: {type(exc).__name__}: {exc}", None, None, None, time.time()
            )
            self.state = "failed"
        finally:
            # Give the partitions back so other workers take them at once, not
            # after the lease expires.
            with contextlib.suppress(Exception):
                await self._db(self._release_all)
            self.executor.shutdown(wait=False)
            if self.state != "failed":
                self.state = "stopped"

    async def _run(self) -> None:
        backoff = 0.05
        while not self.runner.stopping.is_set():
            try:
                if not await self._step():
                    return
                backoff = 0.05
            except _Fenced:
                log.info(
                    "%s: a partition was taken over, or its checkpoint is not where this worker left it; "
                    "resyncing leases and checkpoints",
                    self.name,
                )
                self.owned.clear()
                self.last_lease_sync = -math.inf
            except _Abandoned as exc:
                self.error = ProjectionError(str(exc), None, None, None, time.time())
                self.state = "failed"
                self.owned.clear()
                return
            except EventVaultError as exc:
                # The database or the store, not an event: retry without limit, visibly.
                log.warning("%s: %s; retrying in %.2fs", self.name, exc, backoff)
                self.state = "retrying"
                self.error = ProjectionError(f"{type(exc).__name__}: {exc}", None, None, None, time.time())
                self.owned.clear()
                self.last_lease_sync = -math.inf
                await self._pause(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _step(self) -> bool:
        """Renew leases when due, then apply one page or wait for one. False: this worker is done."""
        r = self.runner
        changed = r.changed.waiter()  # taken before reading: a wake-up meanwhile is not lost
        if time.monotonic() - self.last_lease_sync >= r.lease_seconds / 3 or not self.owned:
            await self._db(self._sync_leases)
            self.last_lease_sync = time.monotonic()
            if self.rebuild and self.swapped:
                return False
        if not self.owned:
            self.state = "idle"
            await self._idle(None, changed)
            return True
        cp = self.checkpoint()
        page = await r.store.read_all(cp, limit=self.cls.batch_size, event_types=self.types)
        if page.checkpoint == cp:
            self.state = "live"
            self.error = None
            if self.rebuild and await self._db(self._try_swap):
                r.after_swap(self.name)
                return False
            await self._idle(cp, changed)
            return True
        self.state = "catching_up"
        if not await self._apply_page(list(page.events), page.checkpoint):
            return False  # failed for good: the error is recorded
        self.error = None
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.runner.stopping.wait()

    async def _idle(self, cp: Checkpoint | None, changed: asyncio.Event) -> None:
        """Wait for new events (after ``cp``), a hint that the database changed, the lease timer or stop."""
        r = self.runner
        timeout = min(r.idle_wait, r.lease_seconds / 3)
        waits: list[Coroutine[Any, Any, Any]] = [r.stopping.wait(), changed.wait()]
        if cp is not None:
            waits.append(r.store.wait_for_events(cp, timeout=timeout))
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            # With a store wait, it ends itself at `timeout`: cancelling it in the middle
            # of its query (the outer timeout winning the race) would waste a connection.
            limit = timeout if cp is None else timeout + 5.0
            done, _ = await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                raise exc

    async def _apply_page(self, events: list[RecordedEvent], end: Checkpoint) -> bool:
        """Apply a page; a failing event is retried alone, with backoff. False: it failed for good."""
        try:
            await self._db(self._apply, events, end)
        except _HandlerFailed as failed:
            first = failed
        else:
            return True
        if first.whole_batch and len(events) > 1:
            return await self._apply_one_by_one(events)
        i = first.index
        if i > 0:
            # Commit the events before the failing one; the next page starts with it.
            with contextlib.suppress(_HandlerFailed):
                await self._db(self._apply, events[:i], events[i - 1].checkpoint)
            return True
        event = events[0]
        delay = self.runner.retry_delay
        for _ in range(self.runner.retries):
            self.state = "retrying"
            self.error = self._error_of(first)
            log.warning("%s: %s; retrying that event in %.2fs", self.name, self.error.message, delay)
            await self._pause(delay)
            if self.runner.stopping.is_set():
                return True
            try:
                await self._db(self._apply, [event], event.checkpoint)
            except _HandlerFailed as again:
                first = again
            else:
                self.state = "catching_up"
                self.error = None
                return True
            delay = min(delay * 2, 30.0)
        await self._db(self._record_failure, first)
        return False

    async def _apply_one_by_one(self, events: list[RecordedEvent]) -> bool:
        """Apply ``events`` one per transaction (a failure of their batch named none of them).

        The one that fails alone is retried and recorded like any failing event.
        """
        for e in events:
            if self.runner.stopping.is_set():
                return True
            if not await self._apply_page([e], e.checkpoint):
                return False
        return True

    @staticmethod
    def _error_of(failed: _HandlerFailed) -> ProjectionError:
        e = failed.event
        return ProjectionError(
            f"{failed} (event {e.event_type} v{e.stream_version} of {e.stream_id})",
            e.position,
            str(e.checkpoint),
            str(e.event_id),
            time.time(),
            e.event_type,
            e.stream_id,
        )

    # -- database work (the worker's thread) -------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A transaction of this worker's that may lock its partitions' rows.

        The database ends it if it sits idle a whole lease (PostgreSQL; see
        ReadModels.limit_idle): a worker stopped in the middle of a batch (SIGSTOP,
        a frozen machine) then keeps a takeover waiting on its locks for at most
        that long, and its batch rolls back. The lease was renewed before the
        transaction began, so a batch that is only slow, under a lease still
        valid, is never ended this way.
        """
        db = self.runner.db
        with db.transaction() as conn:
            db.limit_idle(conn, self.runner.lease_seconds)
            yield conn

    def _apply(self, events: list[RecordedEvent], end: Checkpoint) -> None:
        db = self.runner.db
        counts = dict.fromkeys(self.owned, 0)
        todo = self._todo(events)
        with self._transaction() as conn:
            self._fence(conn)
            session = Session(db, conn, self.cls.physical_names(self.generation), generation=self.generation)
            if todo:
                self._batch_hook(self.projection.begin_batch, session, [t[1] for t in todo], todo[0])
            for i, e, handler, p in todo:
                try:
                    handler(self.projection, session, e)
                except Exception as exc:
                    if db.is_driver_error(exc) and isinstance(db.map_error(exc), StoreUnavailable):
                        raise  # the database went away, not the event's fault: retried without limit
                    raise _HandlerFailed(i, e, exc) from exc
                counts[p] += 1
            if todo:
                self._batch_hook(self.projection.end_batch, session, None, todo[0])
            for p in sorted(self.owned):
                if self.cps[p] >= end:
                    continue
                db.execute(
                    conn,
                    "UPDATE ev_partition SET cp_tx = ?, cp_pos = ?, applied = applied + ? "
                    "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                    (end.tx, end.position, counts[p], self.name, self.generation, p, self.owned[p]),
                )
        for p in self.owned:
            self.cps[p] = max(self.cps[p], end)
        self.rate.add(sum(counts.values()))
        # Committed: what kept this worker from writing (a full disk, a lost
        # connection, a failing event now applied) is over. Said before anyone is
        # told of the progress, so a status read then never shows the old error.
        # (The worker's coroutine is suspended on this call: nothing else writes these.)
        self.error = None
        if self.state == "retrying":
            self.state = "catching_up"
        self.runner.notify_progress()

    def _todo(self, events: list[RecordedEvent]) -> list[tuple[int, RecordedEvent, Any, int]]:
        """(index, event, handler, partition) of the events of a batch this worker applies."""
        parts = self.cls.partitions
        todo = []
        for i, e in enumerate(events):
            p = partition_of(e.stream_id, parts) if parts > 1 else 0
            if p not in self.owned or e.checkpoint <= self.cps[p]:
                continue
            handler = self.handlers.get(e.event_type)
            if handler is not None:
                todo.append((i, e, handler, p))
        return todo

    def _batch_hook(
        self,
        hook: Callable[..., None],
        session: Session,
        events: list[RecordedEvent] | None,
        first: tuple[int, RecordedEvent, Any, int],
    ) -> None:
        """Run the projection's begin_batch (with ``events``) or end_batch; a failure is the batch's."""
        db = self.runner.db
        try:
            if events is None:
                hook(session)
            else:
                hook(session, events)
        except Exception as exc:
            if db.is_driver_error(exc) and isinstance(db.map_error(exc), StoreUnavailable):
                raise
            raise _HandlerFailed(first[0], first[1], exc, whole_batch=True) from exc

    def _fence(self, conn: Any) -> None:
        """Raise _Fenced unless every partition this worker holds still carries its token and checkpoint.

        Fence first: confirm (and, on PostgreSQL, lock) every partition we write
        for, so a takeover or a rebuild's swap either waits for this batch or
        makes it fail here, before any read-model row is touched. In partition
        order, like takeovers, so two workers never lock in opposite orders.
        The checkpoint must be where this worker left it too: read models that
        commit without waiting for the disk can lose their last batches in a
        crash of the database, and then the worker starts again from the
        checkpoint the database kept, not from the one it remembers.
        """
        db = self.runner.db
        for p in sorted(self.owned):
            cp = self.cps[p]
            n = db.execute(
                conn,
                "UPDATE ev_partition SET token = token "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ? AND cp_tx = ? AND cp_pos = ?",
                (self.name, self.generation, p, self.owned[p], cp.tx, cp.position),
            ).rowcount
            if n != 1:
                raise _Fenced(p)

    def _record_failure(self, failed: _HandlerFailed) -> None:
        e = failed.event
        p = partition_of(e.stream_id, self.cls.partitions) if self.cls.partitions > 1 else 0
        error = self._error_of(failed)
        log.error("%s stopped at position %d: %s", self.name, e.position, error.message)
        db = self.runner.db
        with self._transaction() as conn:
            db.execute(
                conn,
                f"UPDATE ev_partition SET error = ?, error_at = {db.now_sql}, error_tx = ?, error_pos = ?, "
                "error_event = ?, error_type = ?, error_stream = ?, owner = NULL, expires = 0 "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (
                    error.message,
                    e.tx,
                    e.position,
                    str(e.event_id),
                    e.event_type,
                    e.stream_id,
                    self.name,
                    self.generation,
                    p,
                    self.owned.get(p, -1),
                ),
            )
        self.error = error
        self.state = "failed"
        self._release_all()

    def _release_all(self) -> None:
        db = self.runner.db
        if self.owned:
            log.info("%s: giving back partitions %s", self.name, sorted(self.owned))
        with self._transaction() as conn:
            for p in sorted(self.owned):
                db.execute(
                    conn,
                    "UPDATE ev_partition SET owner = NULL, expires = 0 "
                    "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                    (self.name, self.generation, p, self.owned[p]),
                )
            if not self.rebuild:
                # Gone from the count of live workers: the others take a fair share at once.
                db.execute(
                    conn,
                    "DELETE FROM ev_worker WHERE worker = ? AND name = ?",
                    (self.runner.worker_id, self.name),
                )
        self.owned.clear()

    def _sync_leases(self) -> None:
        """Renew what we hold, give back what is over our fair share, take free partitions."""
        db = self.runner.db
        with self._transaction() as conn:
            now = float(db.execute(conn, f"SELECT {db.now_sql}").fetchone()[0])
            target = self._fair_share(conn, now)
            self._renew(conn, now, target)
            if len(self.owned) < target:
                self._take(conn, now, target - len(self.owned))
            db.execute(
                conn, "DELETE FROM ev_worker WHERE expires < ?", (now - 10 * self.runner.lease_seconds,)
            )

    def _fair_share(self, conn: Any, now: float) -> int:
        """How many partitions this worker should hold; follows a swapped-in generation."""
        r = self.runner
        db = r.db
        active = int(
            db.execute(conn, "SELECT generation FROM ev_projection WHERE name = ?", (self.name,)).fetchone()[
                0
            ]
        )
        if self.rebuild:
            exists = db.execute(
                conn,
                "SELECT count(*) FROM ev_partition WHERE name = ? AND generation = ?",
                (self.name, self.generation),
            ).fetchone()[0]
            if not exists or active > self.generation:
                raise _Abandoned(f"rebuild of generation {self.generation} was replaced by another")
            return self.cls.partitions
        if active != self.generation:  # a rebuild swapped generations: follow it
            self.generation = active
            self.owned.clear()
            self.cps.clear()
        db.execute(
            conn,
            "INSERT INTO ev_worker (worker, name, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (worker, name) DO UPDATE SET expires = excluded.expires",
            (r.worker_id, self.name, now + r.lease_seconds),
        )
        live = int(
            db.execute(
                conn, "SELECT count(*) FROM ev_worker WHERE name = ? AND expires > ?", (self.name, now)
            ).fetchone()[0]
        )
        return math.ceil(self.cls.partitions / max(live, 1))

    def _renew(self, conn: Any, now: float, target: int) -> None:
        """Extend the leases still ours (forget those taken over), give back those above ``target``."""
        db = self.runner.db
        for p in sorted(self.owned):
            n = db.execute(
                conn,
                "UPDATE ev_partition SET expires = ? "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (now + self.runner.lease_seconds, self.name, self.generation, p, self.owned[p]),
            ).rowcount
            if n != 1:
                del self.owned[p]
                self.cps.pop(p, None)
        for p in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - target)]:
            db.execute(
                conn,
                "UPDATE ev_partition SET owner = NULL, expires = 0 "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (self.name, self.generation, p, self.owned.pop(p)),
            )
            self.cps.pop(p, None)

    def _take(self, conn: Any, now: float, want: int) -> None:
        """Take up to ``want`` free partitions, bumping each one's token (which fences its last holder).

        Free: nobody's, expired, or ours from before (a restart under the same
        worker id, or a lease this worker lost track of after an error).
        """
        r = self.runner
        db = r.db
        free = db.execute(
            conn,
            "SELECT part, owner, expires FROM ev_partition WHERE name = ? AND generation = ? "
            "AND (owner IS NULL OR expires < ? OR owner = ?) AND error IS NULL ORDER BY part",
            (self.name, self.generation, now, r.worker_id),
        ).fetchall()
        for p, owner, expires in free:
            if want == 0:
                return
            if int(p) in self.owned:
                continue
            row = db.execute(
                conn,
                "UPDATE ev_partition SET owner = ?, token = token + 1, expires = ? "
                "WHERE name = ? AND generation = ? AND part = ? "
                "AND (owner IS NULL OR expires < ? OR owner = ?) AND error IS NULL "
                "RETURNING token, cp_tx, cp_pos",
                (r.worker_id, now + r.lease_seconds, self.name, self.generation, p, now, r.worker_id),
            ).fetchone()
            if row is not None:
                self.owned[int(p)] = int(row[0])
                self.cps[int(p)] = _cp(row[1], row[2])
                want -= 1
                if owner is None:
                    log.info("%s: took partition %d (free)", self.name, p)
                elif owner == r.worker_id:
                    log.info("%s: took partition %d back (held under this worker id before)", self.name, p)
                else:
                    log.info(
                        "%s: took partition %d over from %s, whose lease expired %.1fs ago",
                        self.name,
                        p,
                        owner,
                        now - float(expires),
                    )

    def _try_swap(self) -> bool:
        """Make this rebuilt generation the one queries see, if it has caught up with the live one."""
        db = self.runner.db
        cls = self.cls
        if len(self.owned) < cls.partitions:
            return False  # a partition of the new generation is not ours (yet): not complete
        with self._transaction() as conn:
            self.runner.lock_ddl(conn)
            self._fence(conn)  # still ours: nobody took this rebuild over
            active = int(
                db.execute(
                    conn, "SELECT generation FROM ev_projection WHERE name = ?", (cls.name,)
                ).fetchone()[0]
            )
            behind = db.execute(
                conn,
                "SELECT cp_tx, cp_pos FROM ev_partition WHERE name = ? AND generation = ? "
                "ORDER BY cp_tx, cp_pos LIMIT 1",
                (cls.name, active),
            ).fetchone()
            if behind is not None and _cp(behind[0], behind[1]) > self.checkpoint():
                return False  # the live generation is ahead: catch up further first
            db.execute(
                conn,
                "UPDATE ev_projection SET generation = ?, version = ?, partitions = ? WHERE name = ?",
                (self.generation, cls.version, cls.partitions, cls.name),
            )
            for logical, physical in cls.physical_names(self.generation).items():
                db.execute(conn, f"DROP VIEW IF EXISTS {logical}")
                db.execute(conn, f"CREATE VIEW {logical} AS SELECT * FROM {physical}")
            # Fence the old generation's workers: their next checkpoint write fails.
            db.execute(
                conn,
                "UPDATE ev_partition SET token = token + 1, owner = NULL, expires = 0 "
                "WHERE name = ? AND generation = ?",
                (cls.name, active),
            )
            # Hand our partitions to the live workers.
            db.execute(
                conn,
                "UPDATE ev_partition SET owner = NULL, expires = 0 WHERE name = ? AND generation = ?",
                (cls.name, self.generation),
            )
        self.owned.clear()
        self.swapped = True
        self.finished = self.runner.progress_at_swap(self)
        self.runner.drop_generation(cls, active)
        log.info("%s: generation %d now serves (rebuilt from the start)", cls.name, self.generation)
        return True


class ProjectionRunner:
    """Runs projections in this process: catch-up, then live, until stopped.

    ``read_models`` defaults to the event store's own database. ``worker_id``
    names this worker in leases (default: host, pid and a random suffix); a
    worker restarted under the same id takes its partitions back at once,
    without waiting for its old leases to expire. ``lease_seconds`` is how long
    a dead worker's partitions wait before others take them. A handler that
    raises is retried ``retries`` times, ``retry_delay`` seconds apart (doubled
    each time), then its projection stops with the event and the error in
    :meth:`status`. An idle worker looks at the log at least every
    ``idle_wait`` seconds; on a SQLite store, commits by other processes are
    noticed every ``watch_interval`` seconds (``PRAGMA data_version``; None
    turns that off).
    """

    def __init__(  # noqa: PLR0913 - the knobs of a runner
        self,
        store: EventStore,
        projections: Sequence[Projection],
        *,
        read_models: ReadModels | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 10.0,
        retries: int = 3,
        retry_delay: float = 0.1,
        idle_wait: float = 1.0,
        watch_interval: float | None = 0.05,
    ) -> None:
        if not isinstance(store, EventStore):
            raise InvalidInput(f"store must be an EventStore, got {type(store).__name__}")
        if not isinstance(projections, (list, tuple)):
            raise InvalidInput("projections is a list of Projection instances")
        if not all(isinstance(p, Projection) and p.name for p in projections):
            raise InvalidInput("projections are Projection instances with a name")
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise InvalidInput(f"projection names must be unique, got {names}")
        for what, value, low in (
            ("lease_seconds", lease_seconds, 0.0),
            ("idle_wait", idle_wait, 0.0),
            ("retry_delay", retry_delay, None),
            ("watch_interval", 1.0 if watch_interval is None else watch_interval, 0.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInput(f"{what} must be a finite number of seconds, got {value!r}")
            if (low is not None and not value > low) or value < 0:
                raise InvalidInput(f"{what} must be > 0, got {value!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput(f"retries must be an int >= 0, got {retries!r}")
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id.strip()):
            raise InvalidInput(f"worker_id must be a non-empty str, got {worker_id!r}")
        self.store = store
        self.projections = {p.name: p for p in projections}
        # Resolve event types now: an unregistered event class is an error here, not in a task.
        self._handlers = {p.name: self._resolve_handlers(p) for p in projections}
        self.db = read_models if read_models is not None else read_models_for(store)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = float(lease_seconds)
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.idle_wait = float(idle_wait)
        self.watch_interval = watch_interval
        self.stopping = asyncio.Event()
        self.workers: dict[str, _Worker] = {}
        self.rebuilds: dict[str, _Worker] = {}
        self.changed = _Signal()
        self._progress = _Signal()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: _DataVersionWatcher | None = None
        self._started = False

    def _resolve_handlers(self, projection: Projection) -> dict[str, Any]:
        registry = self.store.codec.registry
        cls = type(projection)
        handlers = {registry.of_class(c).name: h for c, h in cls._handlers.items()}
        if not handlers:
            raise InvalidInput(f"projection {cls.name!r} has no @handles methods: it would never do anything")
        return handlers

    def handlers_of(self, projection: Projection) -> dict[str, Any]:
        """Event type name -> handler, for ``projection``."""
        return self._handlers[projection.name]

    # -- lifecycle --------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the bookkeeping and any missing read-model tables without running workers.

        For processes that query read models or show status while workers run elsewhere.
        """
        self._loop = asyncio.get_running_loop()
        await self.store.open()
        await asyncio.to_thread(self._setup)
        for projection in self.projections.values():
            await asyncio.to_thread(self._register, projection, clear_errors=False)

    async def start(self) -> None:
        """Create missing tables, then start a worker per projection. Idempotent."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.changed = _Signal()
        self._progress = _Signal()
        await self.store.open()
        await asyncio.to_thread(self._setup)
        for name, projection in self.projections.items():
            generation = await asyncio.to_thread(self._register, projection)
            self._start_worker(name, _Worker(self, projection, generation))
        path = str(getattr(self.store, "path", ""))
        if self.store.scheme == "sqlite" and self.watch_interval is not None and path not in ("", ":memory:"):
            self._watcher = _DataVersionWatcher(path, self.watch_interval, self._changed_elsewhere)
            self._watcher.start()
        self._started = True

    def _start_worker(self, name: str, worker: _Worker) -> None:
        self.workers[name] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"projection {name}")

    async def stop(self) -> None:
        """Stop every worker, giving its partitions back for others to take at once."""
        self.stopping.set()
        tasks = [w.task for w in [*self.workers.values(), *self.rebuilds.values()] if w.task]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
            self._watcher = None
        await asyncio.to_thread(self.db.close)
        self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- setup ------------------------------------------------------------------------

    def lock_ddl(self, conn: Any) -> None:
        """Serialize projection DDL across processes (SQLite's write lock already does)."""
        if self.db.dialect == "postgresql":
            self.db.execute(conn, "SELECT pg_advisory_xact_lock(?)", (_ADVISORY_KEY,))

    def _setup(self) -> None:
        with self.db.transaction() as conn:
            self.lock_ddl(conn)
            self.db.create_bookkeeping(conn)

    def _register(self, projection: Projection, *, clear_errors: bool = True) -> int:
        """The active generation of ``projection``, creating generation 1 on first sight."""
        cls = type(projection)
        with self.db.transaction() as conn:
            self.lock_ddl(conn)
            row = self.db.execute(
                conn, "SELECT generation, version, partitions FROM ev_projection WHERE name = ?", (cls.name,)
            ).fetchone()
            if row is None:
                self._create_generation(conn, cls, 1)
                self.db.execute(
                    conn,
                    "INSERT INTO ev_projection (name, generation, version, partitions) VALUES (?, 1, ?, ?)",
                    (cls.name, cls.version, cls.partitions),
                )
                for logical, physical in cls.physical_names(1).items():
                    self.db.execute(conn, f"CREATE VIEW {logical} AS SELECT * FROM {physical}")
                return 1
            generation, version, partitions = (int(x) for x in row)
            if (version, partitions) != (cls.version, cls.partitions):
                log.warning(
                    "%s: stored generation was built by version %d with %d partitions; this code is "
                    "version %d with %d: rebuild it",
                    cls.name,
                    version,
                    partitions,
                    cls.version,
                    cls.partitions,
                )
            if not clear_errors:
                return generation
            # A restart is the way to retry after a fix: clear recorded failures.
            self.db.execute(
                conn,
                "UPDATE ev_partition SET error = NULL, error_at = NULL, error_tx = NULL, error_pos = NULL, "
                "error_event = NULL, error_type = NULL, error_stream = NULL "
                "WHERE name = ? AND generation = ? AND error IS NOT NULL",
                (cls.name, generation),
            )
            return generation

    def _create_generation(self, conn: Any, cls: type[Projection], generation: int) -> None:
        names = cls.physical_names(generation)
        for statement in cls.schema:
            self.db.execute(conn, statement.format_map(names))
        for part in range(cls.partitions):
            self.db.execute(
                conn,
                "INSERT INTO ev_partition (name, generation, part) VALUES (?, ?, ?)",
                (cls.name, generation, part),
            )

    def drop_generation(self, cls: type[Projection], generation: int) -> None:
        """Drop an old generation's tables (after a swap)."""
        try:
            with self.db.transaction() as conn:
                self.lock_ddl(conn)
                for physical in cls.physical_names(generation).values():
                    self.db.execute(conn, f"DROP TABLE IF EXISTS {physical}")
                self.db.execute(
                    conn, "DELETE FROM ev_partition WHERE name = ? AND generation = ?", (cls.name, generation)
                )
        except StoreError:
            log.warning("%s: could not drop generation %d yet", cls.name, generation, exc_info=True)

    # -- wake-ups ------------------------------------------------------------------------

    def notify_progress(self) -> None:
        """Called from worker threads after each committed batch."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._progress.fire)

    def _changed_elsewhere(self) -> None:
        """The data_version watcher saw a commit by another connection (its thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._fire_changed)

    def _fire_changed(self) -> None:
        self.changed.fire()
        self._progress.fire()

    def after_swap(self, name: str) -> None:
        """A rebuild of ``name`` swapped in: the live worker follows it now, not at its next lease renewal."""
        live = self.workers.get(name)
        if live is not None:
            live.last_lease_sync = -math.inf
        self._fire_changed()

    # -- waiting ----------------------------------------------------------------------------

    async def wait_for(
        self, checkpoint: Checkpoint | str, *, timeout: float, names: Sequence[str] | None = None
    ) -> bool:
        """Wait until the projections (all, or ``names``) have passed ``checkpoint``; False on timeout.

        Read-your-writes: pass the checkpoint a command returned, then query.
        Progress made by workers in other processes is seen by polling.
        """
        target = Checkpoint.parse(checkpoint)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < math.inf:
            raise InvalidInput(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        if isinstance(names, str):
            raise InvalidInput("names is a list of projection names, not a str")
        wanted = list(self.projections) if names is None else list(names)
        unknown = [n for n in wanted if n not in self.projections]
        if unknown:
            raise InvalidInput(f"unknown projections {unknown}; this runner has {sorted(self.projections)}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            progress = self._progress.waiter()
            if all(cp >= target for cp in (await asyncio.to_thread(self._checkpoints, wanted)).values()):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, _WAIT_FOR_POLL)):
                    await progress.wait()

    def _checkpoints(self, names: Sequence[str]) -> dict[str, Checkpoint]:
        out: dict[str, Checkpoint] = {}
        for name in names:
            rows = self.db.query(
                "SELECT p.cp_tx, p.cp_pos FROM ev_partition p JOIN ev_projection j "
                "ON j.name = p.name AND j.generation = p.generation WHERE p.name = ? "
                "ORDER BY p.cp_tx, p.cp_pos LIMIT 1",
                (name,),
            )
            out[name] = _cp(rows[0][0], rows[0][1]) if rows else START
        return out

    async def catch_up(self, timeout: float = 60.0) -> bool:
        """Wait until every projection has applied everything up to the current head."""
        return await self.wait_for(await self.store.head(), timeout=timeout)

    # -- status ---------------------------------------------------------------------------

    async def status(self) -> list[ProjectionStatus]:
        """The status of every projection of this runner (as the database says, plus local rates)."""
        head = await self.store.head()
        horizon = await self.store.read_horizon_lag()
        held_back = horizon if horizon.pending_events else None
        rows = await asyncio.to_thread(self._status_rows)
        out = []
        for name in self.projections:
            info = rows.get(name)
            worker = self.workers.get(name)
            rebuild = self.rebuilds.get(name)
            if info is None:
                out.append(self._empty_status(name, head))
                continue
            generation, version, parts = info["projection"]
            now = info["now"]
            cps = [_cp(r[1], r[2]) for r in info["partitions"]]
            cp = min(cps) if cps else START
            applied = sum(int(r[3]) for r in info["partitions"])
            errors = [r for r in info["partitions"] if r[4] is not None]
            holders = tuple(
                sorted({str(r[9]) for r in info["partitions"] if r[9] is not None and r[10] > now})
            )
            last_error = None
            if errors:
                r = errors[0]
                last_error = ProjectionError(
                    str(r[4]), int(r[7]), str(_cp(r[6], r[7])), r[8], float(r[5]), r[11], r[12]
                )
            running = worker is not None and worker.task is not None and not worker.task.done()
            lag_events = max(0, head.position - cp.position) if head > cp else 0
            state: State
            if errors or (worker is not None and worker.state == "failed"):
                state = "failed"
            elif running and worker is not None:
                state = worker.state
                # Caught up by what the database says, as wait_for and catch_up see it:
                # live at once, not when the worker next looks at the log.
                if state in ("starting", "catching_up", "retrying") and head <= cp:
                    state = "live"
            elif holders:  # run by workers in other processes
                state = "catching_up" if lag_events else "live"
            else:
                state = "stopped"
            lag_seconds = 0.0
            if head > cp:
                page = await self.store.read_all(cp, limit=1)
                if page.events:
                    lag_seconds = max(0.0, time.time() - page.events[0].recorded_at.timestamp())
            out.append(
                ProjectionStatus(
                    name=name,
                    state=state,
                    generation=generation,
                    version=version,
                    checkpoint=str(cp),
                    head=str(head),
                    lag_events=lag_events,
                    lag_seconds=round(lag_seconds, 3),
                    events_per_second=None if worker is None else round(worker.rate.value(), 1),
                    applied=applied,
                    partitions=parts,
                    owned_partitions=tuple(sorted(worker.owned)) if worker else (),
                    last_error=last_error or (worker.error if worker and state != "live" else None),
                    rebuild=self._rebuild_progress(rebuild, head, generation),
                    workers=holders,
                    held_back=held_back,
                )
            )
        return out

    def _empty_status(self, name: str, head: Checkpoint) -> ProjectionStatus:
        cls = type(self.projections[name])
        return ProjectionStatus(
            name,
            "starting",
            0,
            cls.version,
            str(START),
            str(head),
            head.position,
            0.0,
            None,
            0,
            cls.partitions,
            (),
            None,
            None,
        )

    def _status_rows(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            now = float(self.db.query(f"SELECT {self.db.now_sql}")[0][0])
            for name in self.projections:
                proj = self.db.query(
                    "SELECT generation, version, partitions FROM ev_projection WHERE name = ?", (name,)
                )
                if not proj:
                    continue
                generation = int(proj[0][0])
                parts = self.db.query(
                    "SELECT part, cp_tx, cp_pos, applied, error, error_at, error_tx, error_pos, error_event, "
                    "owner, expires, error_type, error_stream "
                    "FROM ev_partition WHERE name = ? AND generation = ? ORDER BY part",
                    (name, generation),
                )
                out[name] = {"projection": tuple(int(x) for x in proj[0]), "partitions": parts, "now": now}
        except StoreError:
            if self._started:
                raise
            # Never started here and no bookkeeping tables yet: every projection is "starting".
            return {}
        return out

    def _rebuild_progress(
        self, worker: _Worker | None, head: Checkpoint, active: int
    ) -> RebuildProgress | None:
        # A rebuild run here that a newer generation (rebuilt elsewhere, say by the CLI)
        # has replaced since is history: the status shows the generation that serves.
        if worker is None or (worker.generation < active and not self._running(worker)):
            return None
        return self._progress_of(worker, head)

    @staticmethod
    def _running(worker: _Worker) -> bool:
        return worker.task is not None and not worker.task.done()

    def progress_at_swap(self, worker: _Worker) -> RebuildProgress:
        """A rebuild's final progress, taken as it swaps in: everything up to its checkpoint, done."""
        done = worker.checkpoint().position
        elapsed = max(time.monotonic() - worker.started, 1e-6)
        return RebuildProgress(worker.generation, "done", done, done, round(done / elapsed, 1), None)

    def _progress_of(self, worker: _Worker, head: Checkpoint) -> RebuildProgress:
        if worker.finished is not None:
            return worker.finished
        done = worker.checkpoint().position
        total = max(head.position, done)
        elapsed = max(time.monotonic() - worker.started, 1e-6)
        rate = done / elapsed
        state: Literal["running", "done", "failed"] = (
            "done" if worker.swapped else "failed" if worker.state == "failed" else "running"
        )
        eta = None if rate <= 0 or state != "running" else (total - done) / rate
        return RebuildProgress(
            worker.generation,
            state,
            done,
            total,
            round(rate, 1),
            None if eta is None else round(eta, 3),
            None if worker.error is None else worker.error.message,
        )

    # -- control --------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if name not in self.projections:
            raise InvalidInput(f"unknown projection {name!r}; this runner has {sorted(self.projections)}")
        if not self._started:
            raise InvalidInput("start the runner first")

    async def rebuild(self, name: str) -> RebuildProgress:
        """Rebuild ``name`` from the start into new tables while the old ones keep serving.

        When the new tables have caught up with the live ones they replace them
        in one transaction (queries see the old or the new, never a mix).
        Returns at once; follow the progress in :meth:`status`.
        """
        self._check_name(name)
        current = self.rebuilds.get(name)
        head = await self.store.head()
        if current is not None and current.task is not None and not current.task.done():
            return self._progress_of(current, head)
        projection = self.projections[name]
        generation = await asyncio.to_thread(self._new_generation, type(projection))
        worker = _Worker(self, projection, generation, rebuild=True)
        self.rebuilds[name] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"rebuild {name}")
        return self._progress_of(worker, head)

    async def wait_rebuilt(self, name: str, timeout: float) -> bool:
        """Wait for the rebuild of ``name`` to finish; True if it swapped in."""
        worker = self.rebuilds.get(name)
        if worker is None or worker.task is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(worker.task)
        return worker.swapped

    def _new_generation(self, cls: type[Projection]) -> int:
        with self.db.transaction() as conn:
            self.lock_ddl(conn)
            row = self.db.execute(
                conn, "SELECT max(generation) FROM ev_partition WHERE name = ?", (cls.name,)
            ).fetchone()
            active = int(
                self.db.execute(
                    conn, "SELECT generation FROM ev_projection WHERE name = ?", (cls.name,)
                ).fetchone()[0]
            )
            generation = max(int(row[0] or 0), active) + 1
            # Leftovers of an abandoned rebuild are dropped before building anew.
            for stale in range(active + 1, generation):
                for physical in cls.physical_names(stale).values():
                    self.db.execute(conn, f"DROP TABLE IF EXISTS {physical}")
                self.db.execute(
                    conn, "DELETE FROM ev_partition WHERE name = ? AND generation = ?", (cls.name, stale)
                )
            self._create_generation(conn, cls, generation)
        return generation

    async def resume(self, name: str) -> None:
        """Clear a failed projection's error and run it again from where it stopped."""
        self._check_name(name)
        worker = self.workers.get(name)
        if worker is not None and worker.task is not None and not worker.task.done():
            return
        projection = self.projections[name]
        generation = await asyncio.to_thread(self._register, projection)
        self._start_worker(name, _Worker(self, projection, generation))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the read models (blocking; call it from a thread)."""
        return self.db.query(sql, params)
