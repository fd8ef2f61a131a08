"""The worker loop: one projection (one generation) in this process, from its checkpoint on.

A worker reads the global log from its checkpoint and applies pages of events
in transactions that also move the checkpoint, so a crash anywhere never loses
or double-applies an event. Each step renews its leases when due
(:mod:`eventvault.projections._leases`), then applies one page or waits for
one. A handler that raises is retried alone a few times, then the projection
stops there with the event recorded; an error of the database is retried
without limit. Every change of the worker's state goes through
:meth:`Worker.happen` (the transitions: :mod:`eventvault.projections._states`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, TypeVar

from eventvault.errors import EventVaultError, StoreUnavailable
from eventvault.projections._leases import Abandoned, LeaseLost, Leases
from eventvault.projections._projection import Session
from eventvault.projections._rebuild import drop_generation, swap_in
from eventvault.projections._states import (
    Behind,
    CaughtUp,
    Committed,
    DatabaseError,
    EventRetrying,
    Exited,
    Fenced,
    GaveUp,
    Happening,
    NoPartitions,
    PageDone,
    WorkerState,
    next_state,
)
from eventvault.projections._status import ProjectionError, RebuildProgress, progress_at_swap

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from eventvault.projections._projection import Projection
    from eventvault.projections._runner import ProjectionRunner
    from eventvault.store.records import Checkpoint, RecordedEvent

__all__ = ["HandlerFailed", "Planned", "Rate", "Worker"]

log = logging.getLogger("eventvault.projections")

T = TypeVar("T")
_MAX_BACKOFF: Final = 5.0
_PASS_OTHERS_WITHIN: Final = 0.1
"""Seconds an idle worker may leave events it does not handle unpassed (its checkpoint behind them)."""


class HandlerFailed(Exception):
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


class Planned(NamedTuple):
    """An event of a batch that this worker applies: where it is in the batch, its handler, its partition."""

    at: int
    event: RecordedEvent
    handler: Any
    partition: int


class _Sample(NamedTuple):
    at: float
    events: int


class Rate:
    """Events per second over a sliding window."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.samples: deque[_Sample] = deque()

    def add(self, n: int) -> None:
        now = time.monotonic()
        self.samples.append(_Sample(now, n))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.samples and self.samples[0].at < now - self.window:
            self.samples.popleft()

    def value(self) -> float:
        now = time.monotonic()
        self._trim(now)
        if not self.samples:
            return 0.0
        span = max(now - self.samples[0].at, 1.0)
        return sum(s.events for s in self.samples) / span


class Worker:
    """Runs one projection (one generation) in this process."""

    #: Whether the worker lingers after new events come (the runner's ``linger``) before reading them.
    lingers: ClassVar[bool] = True

    def __init__(
        self, runner: ProjectionRunner, projection: Projection, generation: int, *, rebuild: bool = False
    ) -> None:
        self.runner = runner
        self.projection = projection
        self.cls = type(projection)
        self.rebuild = rebuild
        self.leases = Leases(
            runner.db,
            self.cls,
            generation,
            worker_id=runner.worker_id,
            lease_seconds=runner.lease_seconds,
            rebuild=rebuild,
        )
        self.state = WorkerState()
        """Changed by :meth:`happen` alone."""
        self.rate = Rate()
        self.task: asyncio.Task[None] | None = None
        self._hurry: asyncio.Event | None = None  # set: end the idle wait now (see hurry)
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

    @property
    def generation(self) -> int:
        """The generation this worker writes (a live worker follows a rebuild's swap)."""
        return self.leases.generation

    @property
    def owned(self) -> dict[int, int]:
        """Partition -> lease token, for the partitions this worker holds."""
        return self.leases.owned

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def checkpoint(self) -> Checkpoint:
        return self.leases.checkpoint()

    def hurry(self, target: Checkpoint) -> None:
        """Read the log now if idle behind ``target``: a reader waits for this projection to pass it.

        An idle worker sleeps through appends of events it does not handle, so
        its checkpoint may stay behind them for a moment; runs on the event loop.
        """
        if self._hurry is not None and self.checkpoint() < target:
            self._hurry.set()

    def happen(self, happening: Happening) -> None:
        """Move to the state that ``happening`` leads to: the one place the worker's state changes.

        Runs on the event loop, or on the worker's thread while the worker's
        coroutine waits for it: never two at once.
        """
        self.state = next_state(self.state, happening)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            # A bug (ours or a backend's), not a handler failure: say so, never die silently.
            log.exception("%s: the worker crashed", self.name)
            message = f"the worker crashed: {type(exc).__name__}: {exc}"
            self.happen(GaveUp(ProjectionError(message, None, None, None, time.time())))
        finally:
            # Give the partitions back so other workers take them at once, not
            # after the lease expires.
            with contextlib.suppress(Exception):
                await self._db(self.leases.release_all)
            self.executor.shutdown(wait=False)
            self.happen(Exited())

    async def _run(self) -> None:
        backoff = 0.05
        while not self.runner.stopping.is_set():
            try:
                if not await self._step():
                    return
                backoff = 0.05
            except LeaseLost:
                log.info(
                    "%s: a partition was taken over, or its checkpoint is not where this worker left it; "
                    "resyncing leases and checkpoints",
                    self.name,
                )
                self.happen(Fenced())
                self.leases.forget()
            except Abandoned as exc:
                self.happen(GaveUp(ProjectionError(str(exc), None, None, None, time.time())))
                self.leases.owned.clear()
                return
            except EventVaultError as exc:
                # The database or the store, not an event: retry without limit, visibly.
                log.warning("%s: %s; retrying in %.2fs", self.name, exc, backoff)
                error = ProjectionError(f"{type(exc).__name__}: {exc}", None, None, None, time.time())
                self.happen(DatabaseError(error))
                self.leases.forget()
                await self._pause(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _step(self) -> bool:
        """Renew leases when due, then apply one page or wait for one. False: this worker is done."""
        r = self.runner
        changed = r.changed.waiter()  # taken before reading: a wake-up meanwhile is not lost
        if self.leases.due():
            await self._db(self.leases.sync)
            self.leases.synced()
            if self.rebuild and self.swapped:
                return False
        if not self.leases.owned:
            self.happen(NoPartitions())
            await self._idle(None, changed)
            return True
        cp = self.checkpoint()
        page = await r.store.read_all(cp, limit=self.cls.batch_size, event_types=self.types)
        if page.checkpoint == cp:
            self.happen(CaughtUp())
            if self.rebuild and await self._db(self._try_swap):
                r.after_swap(self.name)
                return False
            await self._idle(cp, changed)
            return True
        self.happen(Behind())
        if not await self._apply_page(list(page.events), page.checkpoint):
            return False  # failed for good: the error is recorded
        self.happen(PageDone())
        short = len(page.events) < self.cls.batch_size
        if short and not self.rebuild and self.checkpoint() == page.checkpoint:
            # A short page, all applied, reached the end of the log as its read saw it:
            # wait for the next events now instead of reading an empty page first. The
            # wait looks at the head before it sleeps, so events appended meanwhile
            # end it at once (what that empty read would have found).
            self.happen(CaughtUp())
            await self._idle(page.checkpoint, changed)
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.runner.stopping.wait()

    async def _idle(self, cp: Checkpoint | None, changed: asyncio.Event) -> None:
        """Wait for new events (after ``cp``), a hint that the database changed, the lease timer or stop."""
        r = self.runner
        timeout = min(r.idle_wait, r.lease_seconds / 3)
        self._hurry = hurry = asyncio.Event()
        waits: list[Coroutine[Any, Any, Any]] = [r.stopping.wait(), changed.wait(), hurry.wait()]
        if cp is not None:
            if r.store.wakes_by_type:
                # Sleep through appends of events this worker does not handle; pass
                # them soon, many at a time, rather than at each append (a reader
                # waiting for this projection with wait_for wakes it at once).
                if await r.store.head() > cp:
                    timeout = min(timeout, _PASS_OTHERS_WITHIN)
                waits.append(r.store.wait_for_events(cp, timeout=timeout, event_types=self.types))
            else:
                waits.append(r.store.wait_for_events(cp, timeout=timeout))
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            # With a store wait, it ends itself at `timeout`: cancelling it in the middle
            # of its query (the outer timeout winning the race) would waste a connection.
            limit = timeout if cp is None else timeout + 5.0
            done, _ = await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            woken_by_events = cp is not None and done == {tasks[-1]} and tasks[-1].exception() is None
            if woken_by_events and tasks[-1].result() and self.lingers and r.linger:
                # New events: let more of them come, and apply them in one batch, unless
                # a reader waits for them (wait_for hurries), the database changed or
                # the runner stops.
                await asyncio.wait(tasks[:3], timeout=r.linger, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._hurry = None
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
        except HandlerFailed as failed:
            first = failed
        else:
            return True
        if first.whole_batch and len(events) > 1:
            return await self._apply_one_by_one(events)
        i = first.index
        if i > 0:
            # Commit the events before the failing one; the next page starts with it.
            with contextlib.suppress(HandlerFailed):
                await self._db(self._apply, events[:i], events[i - 1].checkpoint)
            return True
        event = events[0]
        delay = self.runner.retry_delay
        for _ in range(self.runner.retries):
            error = self._error_of(first)
            self.happen(EventRetrying(error))
            log.warning("%s: %s; retrying that event in %.2fs", self.name, error.message, delay)
            await self._pause(delay)
            if self.runner.stopping.is_set():
                return True
            try:
                await self._db(self._apply, [event], event.checkpoint)  # its commit moves the state on
            except HandlerFailed as again:
                first = again
            else:
                return True
            delay = min(delay * 2, 30.0)
        self.happen(GaveUp(await self._db(self._record_failure, first)))
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
    def _error_of(failed: HandlerFailed) -> ProjectionError:
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

    def _apply(self, events: list[RecordedEvent], end: Checkpoint) -> None:
        db = self.runner.db
        leases = self.leases
        counts = dict.fromkeys(leases.owned, 0)
        todo = self._plan(events)
        with leases.transaction() as conn:
            leases.fence(conn)
            session = Session(db, conn, self.cls.physical_names(self.generation), generation=self.generation)
            if todo:
                self._batch_hook(self.projection.begin_batch, session, [t.event for t in todo], todo[0])
            for step in todo:
                try:
                    step.handler(self.projection, session, step.event)
                except Exception as exc:
                    if db.is_driver_error(exc) and isinstance(db.map_error(exc), StoreUnavailable):
                        raise  # the database went away, not the event's fault: retried without limit
                    raise HandlerFailed(step.at, step.event, exc) from exc
                counts[step.partition] += 1
            if todo:
                self._batch_hook(self.projection.end_batch, session, None, todo[0])
            if leases.advance(conn, end, counts):
                db.announce_progress(conn)
        leases.advanced(end)
        self.rate.add(sum(counts.values()))
        # Committed: what kept this worker from writing (a full disk, a lost
        # connection, a failing event now applied) is over. Said before anyone is
        # told of the progress, so a status read then never shows the old error.
        # (The worker's coroutine is suspended on this call: nothing else writes these.)
        self.happen(Committed())
        self.runner.notify_progress()

    def _plan(self, events: list[RecordedEvent]) -> list[Planned]:
        """The events of a batch this worker applies: handled, of a partition it holds, not yet applied."""
        leases = self.leases
        todo = []
        for i, e in enumerate(events):
            p = leases.partition_of(e.stream_id)
            if p not in leases.owned or e.checkpoint <= leases.cps[p]:
                continue
            handler = self.handlers.get(e.event_type)
            if handler is not None:
                todo.append(Planned(i, e, handler, p))
        return todo

    def _batch_hook(
        self,
        hook: Callable[..., None],
        session: Session,
        events: list[RecordedEvent] | None,
        first: Planned,
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
            raise HandlerFailed(first.at, first.event, exc, whole_batch=True) from exc

    def _record_failure(self, failed: HandlerFailed) -> ProjectionError:
        """Record that the event of ``failed`` failed for good, give the partitions back; return the error."""
        error = self._error_of(failed)
        log.error("%s stopped at position %d: %s", self.name, failed.event.position, error.message)
        self.leases.record_failure(failed.event, error)
        return error

    def _try_swap(self) -> bool:
        """Make this rebuilt generation the one queries see, if it has caught up with the live one."""
        replaced = swap_in(self.runner.db, self.cls, self.leases)
        if replaced is None:
            return False
        self.swapped = True
        self.finished = progress_at_swap(self)
        drop_generation(self.runner.db, self.cls, replaced)
        log.info("%s: generation %d now serves (rebuilt from the start)", self.name, self.generation)
        return True
