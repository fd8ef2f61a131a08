"""The projection runner: one per process, running any number of projections.

For each projection a :class:`~eventvault.projections._worker.Worker` task
reads the global log from its checkpoint and applies pages of events in
transactions that also move the checkpoint. Where each part lives:

- ``_worker.py``: the worker loop (catch-up, live, retries, failures);
- ``_states.py``: the worker's states and the one function that moves between them;
- ``_leases.py``: leases on partitions, fencing tokens, fair shares;
- ``_rebuild.py``: generations (register, build anew, swap in, drop);
- ``_status.py``: what ``status()`` reports, from the database and the local worker;
- ``_wakeups.py``: wake-ups (same process, other processes on SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any, Final, Self

from eventvault.errors import InvalidInput
from eventvault.projections._control import reset_to, set_paused
from eventvault.projections._db import ReadModels, read_models_for
from eventvault.projections._leases import checkpoint_at
from eventvault.projections._projection import Projection
from eventvault.projections._rebuild import new_generation, register, setup
from eventvault.projections._status import (
    ProjectionError,
    ProjectionStatus,
    RebuildProgress,
    progress_of,
    projection_status,
    read_stored,
)
from eventvault.projections._wakeups import DataVersionWatcher, ProgressListener, Signal
from eventvault.projections._worker import Worker
from eventvault.store.base import EventStore
from eventvault.store.records import START, Checkpoint

__all__ = ["ProjectionError", "ProjectionRunner", "ProjectionStatus", "RebuildProgress"]

_WAIT_FOR_POLL: Final = 0.25  # wait_for re-reads checkpoints this often (progress made elsewhere)


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
    turns that off). On a store that :attr:`~EventStore.wakes_by_type`, an
    idle worker sleeps through appends of events it has no handler for, and
    passes them at the next of those hints (or 0.1 s after going idle with
    such events already there). Woken by
    new events, a worker waits ``linger`` seconds more (0: not at all) so that
    it applies what comes meanwhile in the same batch; process managers'
    workers never do (their steps act on the events). A :meth:`wait_for` ends
    either wait at once for the workers it waits for.
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
        linger: float = 0.005,
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
            ("linger", linger, None),
            ("watch_interval", 1.0 if watch_interval is None else watch_interval, 0.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInput(f"{what} must be a finite number of seconds, got {value!r}")
            if (low is not None and not value > low) or value < 0:
                raise InvalidInput(f"{what} must be {'>= 0' if low is None else '> 0'}, got {value!r}")
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
        self.linger = float(linger)
        self.watch_interval = watch_interval
        self.stopping = asyncio.Event()
        self.workers: dict[str, Worker] = {}
        self.rebuilds: dict[str, Worker] = {}
        self.changed = Signal()
        self._progress = Signal()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: list[DataVersionWatcher] = []
        self._listener: ProgressListener | None = None
        self._prepared = False  # prepare() or start() ran, stop() not since
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

        For processes that query read models or show status while workers run
        elsewhere; its first :meth:`wait_for` starts watching for their commits.
        """
        self._loop = asyncio.get_running_loop()
        if not self._started:
            self.stopping = asyncio.Event()  # a stop before this one must not end its rebuilds
        await self.store.open()
        await asyncio.to_thread(setup, self.db)
        for projection in self.projections.values():
            await asyncio.to_thread(register, self.db, type(projection), clear_errors=False)
        self._prepared = True

    async def start(self) -> None:
        """Create missing tables, then start a worker per projection. Idempotent."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.changed = Signal()
        self._progress = Signal()
        await self.store.open()
        await asyncio.to_thread(setup, self.db)
        for name, projection in self.projections.items():
            generation = await asyncio.to_thread(register, self.db, type(projection))
            self._start_worker(name, self.make_worker(projection, generation))
        self._watch()
        self._prepared = self._started = True

    def _watch(self) -> None:
        """Start noticing (once) what other connections commit.

        On a SQLite file every commit (its data_version): the log's (new events)
        and the read models' (progress, leases), when they are two files; on
        PostgreSQL every projection batch.
        """
        if not self._watchers and self.watch_interval is not None:
            files = {str(getattr(self.store, "path", "")) if self.store.scheme == "sqlite" else ""}
            files.add(str(getattr(self.db, "path", "")) if self.db.dialect == "sqlite" else "")
            for path in sorted(files - {"", ":memory:"}):
                watcher = DataVersionWatcher(path, self.watch_interval, self._changed_elsewhere)
                watcher.start()
                self._watchers.append(watcher)
        if self._listener is None:
            # Progress only: new events reach the workers through the store's own LISTEN.
            self._listener = self.db.progress_listener(self._fire_progress)
            if self._listener is not None:
                self._listener.start()

    def make_worker(self, projection: Projection, generation: int, *, rebuild: bool = False) -> Worker:
        """The worker that runs ``projection`` (a subclass of the runner may run its own kind)."""
        return Worker(self, projection, generation, rebuild=rebuild)

    def _start_worker(self, name: str, worker: Worker) -> None:
        self.workers[name] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"projection {name}")

    async def stop(self) -> None:
        """Stop every worker, giving its partitions back for others to take at once."""
        self.stopping.set()
        tasks = [w.task for w in [*self.workers.values(), *self.rebuilds.values()] if w.task]
        await asyncio.gather(*tasks, return_exceptions=True)
        for watcher in self._watchers:
            await asyncio.to_thread(watcher.stop)
        self._watchers = []
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await asyncio.to_thread(self.db.close)
        self._prepared = self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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

    def _fire_progress(self) -> None:
        self._progress.fire()

    def _fire_changed(self) -> None:
        self.changed.fire()
        self._progress.fire()

    def after_swap(self, name: str) -> None:
        """A rebuild of ``name`` swapped in: the live worker follows it now, not at its next lease renewal."""
        live = self.workers.get(name)
        if live is not None:
            live.leases.sync_soon()
        self._fire_changed()

    # -- waiting ----------------------------------------------------------------------------

    async def wait_for(
        self, checkpoint: Checkpoint | str, *, timeout: float, names: Sequence[str] | None = None
    ) -> bool:
        """Wait until the projections (all, or ``names``) have passed ``checkpoint``; False on timeout.

        Read-your-writes: pass the checkpoint a command returned, then query.
        Progress made by workers in other processes (a runner that was only
        prepared here) is seen on a SQLite file within ``watch_interval``
        (its data_version watcher), and otherwise by polling every 0.25 s.
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
        if self._prepared and self._loop is loop:  # stop() ends what this starts
            self._watch()  # hear of workers' commits elsewhere, not only by re-reading
        deadline = loop.time() + timeout
        while True:
            progress = self._progress.waiter()
            if all(cp >= target for cp in (await asyncio.to_thread(self._checkpoints, wanted)).values()):
                return True
            if self._loop is loop:
                self._hurry(wanted, target)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, _WAIT_FOR_POLL)):
                    await progress.wait()

    def _hurry(self, names: Sequence[str], target: Checkpoint) -> None:
        """Wake the idle workers of ``names`` behind ``target``.

        An idle worker sleeps through appends of events it does not handle, its
        checkpoint behind them for a moment: a reader waiting for it wakes it.
        """
        for name in names:
            if (worker := self.workers.get(name)) is not None:
                worker.hurry(target)

    def _checkpoints(self, names: Sequence[str]) -> dict[str, Checkpoint]:
        out: dict[str, Checkpoint] = {}
        for name in names:
            rows = self.db.query(
                "SELECT p.cp_tx, p.cp_pos FROM ev_partition p JOIN ev_projection j "
                "ON j.name = p.name AND j.generation = p.generation WHERE p.name = ? "
                "ORDER BY p.cp_tx, p.cp_pos LIMIT 1",
                (name,),
            )
            out[name] = checkpoint_at(*rows[0]) if rows else START
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
        stored = await asyncio.to_thread(read_stored, self.db, list(self.projections), started=self._started)
        return [
            await projection_status(
                projection,
                stored.get(name),
                self.workers.get(name),
                self.rebuilds.get(name),
                store=self.store,
                head=head,
                held_back=held_back,
            )
            for name, projection in self.projections.items()
        ]

    # -- control --------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if name not in self.projections:
            raise InvalidInput(f"unknown projection {name!r}; this runner has {sorted(self.projections)}")
        if not self._prepared:
            raise InvalidInput("prepare or start the runner first")

    async def rebuild(self, name: str) -> RebuildProgress:
        """Rebuild ``name`` from the start into new tables while the old ones keep serving.

        When the new tables have caught up with the live ones they replace them
        in one transaction (queries see the old or the new, never a mix).
        Returns at once; follow the progress in :meth:`status`. A runner that
        was only prepared rebuilds too, while the live read model stays with
        the workers elsewhere: they follow the swap at their next checkpoint
        write or lease renewal.
        """
        self._check_name(name)
        self._watch()  # a prepared runner hears of new events and the live workers' progress from now
        current = self.rebuilds.get(name)
        head = await self.store.head()
        if current is not None and current.running:
            return progress_of(current, head)
        projection = self.projections[name]
        generation = await asyncio.to_thread(new_generation, self.db, type(projection))
        worker = self.make_worker(projection, generation, rebuild=True)
        self.rebuilds[name] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"rebuild {name}")
        return progress_of(worker, head)

    async def wait_rebuilt(self, name: str, timeout: float) -> bool:
        """Wait for the rebuild of ``name`` to finish; True if it swapped in."""
        worker = self.rebuilds.get(name)
        if worker is None or worker.task is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(worker.task)
        return worker.swapped

    def _check_known(self, name: str) -> None:
        if name not in self.projections:
            raise InvalidInput(f"unknown projection {name!r}; this runner has {sorted(self.projections)}")

    async def pause(self, name: str) -> bool:
        """Stop ``name`` from applying events, in every process, until :meth:`resume`; True if it ran.

        Works on a runner that was only prepared (:meth:`prepare`): the pause is
        kept in the database, and the workers holding the projection's
        partitions lose them at their next checkpoint write or lease renewal.
        """
        self._check_known(name)
        changed = await asyncio.to_thread(set_paused, self.db, name, paused=True)
        self._sync_soon(name)
        return changed

    async def resume(self, name: str) -> None:
        """Run ``name`` again: lift a pause, clear a failed projection's error, go on from where it stopped.

        On a started runner, this process's worker runs it again too; on a
        prepared one, workers elsewhere take it up at their next lease renewal.
        """
        self._check_known(name)
        projection = self.projections[name]
        await asyncio.to_thread(set_paused, self.db, name, paused=False)
        generation = await asyncio.to_thread(register, self.db, type(projection))
        self._sync_soon(name)
        if not self._started:
            return
        worker = self.workers.get(name)
        if worker is not None and worker.running:
            return
        self._start_worker(name, self.make_worker(projection, generation))

    async def reset(self, name: str, to: Checkpoint | str) -> int:
        """Move the paused projection ``name`` forward to checkpoint ``to``, skipping the events before it.

        For a poison event that no fix will make apply: skip it, then
        :meth:`resume`. A checkpoint never moves back (rebuild to apply events
        again). Returns how many partitions moved.
        """
        self._check_known(name)
        target = Checkpoint.parse(to)
        head = await self.store.head()
        moved = await asyncio.to_thread(reset_to, self.db, name, target, head)
        self._sync_soon(name)
        return moved

    def _sync_soon(self, name: str) -> None:
        worker = self.workers.get(name)
        if worker is not None:
            worker.leases.sync_soon()
        if self._loop is not None:
            self._fire_changed()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the read models (blocking; call it from a thread)."""
        return self.db.query(sql, params)
