"""The projection runner: catch-up, live, leases, fencing, failures, rebuild, status.

One :class:`ProjectionRunner` per process runs any number of projections. For
each, a worker task reads the global log from its checkpoint and applies pages
of events in transactions that also move the checkpoint, so a crash anywhere
never loses or double-applies an event.

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
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Self

from eventvault.errors import EventVaultError, InvalidInput, StoreError
from eventvault.projections._db import ReadModels, read_models_for
from eventvault.projections._projection import Projection, Session, partition_of
from eventvault.store.base import EventStore
from eventvault.store.records import START, Checkpoint, RecordedEvent

__all__ = ["ProjectionError", "ProjectionRunner", "ProjectionStatus", "RebuildProgress"]

log = logging.getLogger("eventvault.projections")

State = Literal["starting", "catching_up", "live", "idle", "failed", "stopped"]
_ADVISORY_KEY: Final = 0x6576_7072  # "evpr": serializes projection DDL on PostgreSQL


@dataclass(frozen=True, slots=True)
class ProjectionError:
    """Why a projection stopped: the event it could not apply and the error."""

    message: str
    position: int | None
    checkpoint: str | None
    event_id: str | None
    at: float | None


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


class _Fenced(Exception):
    """Another worker took a partition over: this worker's batch was rolled back."""


class _HandlerFailed(Exception):
    def __init__(self, index: int, event: RecordedEvent, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.index = index
        self.event = event
        self.cause = cause


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, n: int) -> None:
        now = time.monotonic()
        self.samples.append((now, n))
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()

    def value(self) -> float:
        if not self.samples:
            return 0.0
        now = time.monotonic()
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()
        if not self.samples:
            return 0.0
        span = max(now - self.samples[0][0], 1.0)
        return sum(n for _, n in self.samples) / span


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
        registry = runner.store.codec.registry
        self.handlers = {registry.of_class(c).name: h for c, h in self.cls._handlers.items()}  # noqa: SLF001
        self.types = tuple(self.handlers)
        # rebuild progress
        self.started = time.monotonic()
        self.total = 0
        self.swapped = False

    @property
    def name(self) -> str:
        return self.cls.name

    def checkpoint(self) -> Checkpoint:
        return min(self.cps.values()) if self.cps else START

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        r = self.runner
        backoff = 0.05
        while not r.stopping.is_set():
            try:
                now = time.monotonic()
                if now - self.last_lease_sync >= r.lease_seconds / 3 or not self.owned:
                    await asyncio.to_thread(self._sync_leases)
                    self.last_lease_sync = time.monotonic()
                    if self.rebuild and self.swapped:
                        return
                if not self.owned:
                    self.state = "idle"
                    await self._pause(r.lease_seconds / 3)
                    continue
                cp = self.checkpoint()
                page = await r.store.read_all(cp, limit=self.cls.batch_size, event_types=self.types)
                if page.checkpoint == cp:
                    self.state = "live"
                    if self.rebuild and await asyncio.to_thread(self._try_swap):
                        return
                    await r.store.wait_for_events(cp, timeout=min(r.idle_wait, r.lease_seconds / 3))
                    continue
                self.state = "catching_up"
                if not await self._apply_page(list(page.events), page.checkpoint):
                    return  # failed: the error is recorded
                backoff = 0.05
            except _Fenced:
                log.info("%s: a partition was taken over; resyncing leases", self.name)
                self.owned.clear()
                self.last_lease_sync = -math.inf
            except EventVaultError as exc:
                log.warning("%s: %s; retrying in %.2fs", self.name, exc, backoff)
                self.owned.clear()
                self.last_lease_sync = -math.inf
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
        self.state = "stopped"

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.runner.stopping.wait()

    async def _apply_page(self, events: list[RecordedEvent], end: Checkpoint) -> bool:
        try:
            await asyncio.to_thread(self._apply, events, end)
        except _HandlerFailed as failed:
            first = failed
        else:
            return True
        # Commit what came before the failing event, then retry it alone with backoff.
        i = first.index
        if i > 0:
            await asyncio.to_thread(self._apply, events[:i], events[i - 1].checkpoint)
        event = events[i]
        delay = self.runner.retry_delay
        for _ in range(self.runner.retries):
            await self._pause(delay)
            if self.runner.stopping.is_set():
                return True
            try:
                await asyncio.to_thread(self._apply, [event], event.checkpoint)
            except _HandlerFailed as again:
                first = again
            else:
                return True
            delay *= 4
        await asyncio.to_thread(self._record_failure, first)
        return False

    # -- database work (worker threads) ----------------------------------------

    def _apply(self, events: list[RecordedEvent], end: Checkpoint) -> None:
        db = self.runner.db
        parts = self.cls.partitions
        counts = dict.fromkeys(self.owned, 0)
        with db.transaction() as conn:
            # Fence first: confirm (and, on PostgreSQL, lock) every partition we write
            # for, so a takeover or a rebuild's swap either waits for this batch or
            # makes it fail here, before any read-model row is touched.
            for p, token in self.owned.items():
                n = db.execute(
                    conn,
                    "UPDATE ev_partition SET token = token "
                    "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                    (self.name, self.generation, p, token),
                ).rowcount
                if n != 1:
                    raise _Fenced(p)
            session = Session(db, conn, self.cls.physical_names(self.generation))
            for i, e in enumerate(events):
                p = partition_of(e.stream_id, parts) if parts > 1 else 0
                if p not in self.owned or e.checkpoint <= self.cps[p]:
                    continue
                handler = self.handlers.get(e.event_type)
                if handler is None:
                    continue
                try:
                    handler(self.projection, session, e)
                except Exception as exc:
                    raise _HandlerFailed(i, e, exc) from exc
                counts[p] += 1
            for p, token in self.owned.items():
                if self.cps[p] >= end:
                    continue
                db.execute(
                    conn,
                    "UPDATE ev_partition SET cp_tx = ?, cp_pos = ?, applied = applied + ? "
                    "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                    (end.tx, end.position, counts[p], self.name, self.generation, p, token),
                )
        for p in self.owned:
            self.cps[p] = max(self.cps[p], end)
        self.rate.add(sum(counts.values()))
        self.runner.notify_progress()

    def _record_failure(self, failed: _HandlerFailed) -> None:
        e = failed.event
        p = partition_of(e.stream_id, self.cls.partitions) if self.cls.partitions > 1 else 0
        message = f"{failed} (event {e.event_type} v{e.stream_version} of {e.stream_id})"
        log.error("%s stopped at position %d: %s", self.name, e.position, message)
        db = self.runner.db
        with db.transaction() as conn:
            db.execute(
                conn,
                f"UPDATE ev_partition SET error = ?, error_at = {db.now_sql}, error_tx = ?, error_pos = ?, "
                "error_event = ?, owner = NULL, expires = 0 "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (
                    message,
                    e.tx,
                    e.position,
                    str(e.event_id),
                    self.name,
                    self.generation,
                    p,
                    self.owned.get(p, -1),
                ),
            )
        self.error = ProjectionError(message, e.position, str(e.checkpoint), str(e.event_id), time.time())
        self.state = "failed"
        self._release_all()

    def _release_all(self) -> None:
        db = self.runner.db
        with contextlib.suppress(StoreError), db.transaction() as conn:
            for p, token in self.owned.items():
                db.execute(
                    conn,
                    "UPDATE ev_partition SET owner = NULL, expires = 0 "
                    "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                    (self.name, self.generation, p, token),
                )
        self.owned.clear()

    def _sync_leases(self) -> None:
        """Renew what we hold, give back what is over our fair share, take free partitions."""
        r = self.runner
        db = r.db
        ttl = r.lease_seconds
        with db.transaction() as conn:
            now = float(db.execute(conn, f"SELECT {db.now_sql}").fetchone()[0])
            if not self.rebuild:
                row = db.execute(
                    conn, "SELECT generation FROM ev_projection WHERE name = ?", (self.name,)
                ).fetchone()
                active = int(row[0])
                if active != self.generation:  # a rebuild swapped generations: follow it
                    self.generation = active
                    self.owned.clear()
                    self.cps.clear()
                db.execute(
                    conn,
                    "INSERT INTO ev_worker (worker, name, expires) VALUES (?, ?, ?) "
                    "ON CONFLICT (worker, name) DO UPDATE SET expires = excluded.expires",
                    (r.worker_id, self.name, now + ttl),
                )
                live = int(
                    db.execute(
                        conn,
                        "SELECT count(*) FROM ev_worker WHERE name = ? AND expires > ?",
                        (self.name, now),
                    ).fetchone()[0]
                )
                target = math.ceil(self.cls.partitions / max(live, 1))
            else:
                target = self.cls.partitions
            for p, token in list(self.owned.items()):
                n = db.execute(
                    conn,
                    "UPDATE ev_partition SET expires = ? "
                    "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                    (now + ttl, self.name, self.generation, p, token),
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
            want = target - len(self.owned)
            if want > 0:
                free = db.execute(
                    conn,
                    "SELECT part FROM ev_partition WHERE name = ? AND generation = ? "
                    "AND (owner IS NULL OR expires < ?) AND error IS NULL ORDER BY part",
                    (self.name, self.generation, now),
                ).fetchall()
                for (p,) in free[:want]:
                    row = db.execute(
                        conn,
                        "UPDATE ev_partition SET owner = ?, token = token + 1, expires = ? "
                        "WHERE name = ? AND generation = ? AND part = ? "
                        "AND (owner IS NULL OR expires < ?) AND error IS NULL "
                        "RETURNING token, cp_tx, cp_pos",
                        (r.worker_id, now + ttl, self.name, self.generation, p, now),
                    ).fetchone()
                    if row is not None:
                        self.owned[int(p)] = int(row[0])
                        self.cps[int(p)] = _cp(row[1], row[2])
            db.execute(conn, "DELETE FROM ev_worker WHERE expires < ?", (now - 10 * ttl,))

    def _try_swap(self) -> bool:
        """Make this rebuilt generation the one queries see, if it has caught up with the live one."""
        db = self.runner.db
        cls = self.cls
        with db.transaction() as conn:
            self.runner.lock_ddl(conn)
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
        self.runner.drop_generation(cls, active)
        log.info("%s: generation %d now serves (rebuilt from the start)", cls.name, self.generation)
        return True


class ProjectionRunner:
    """Runs projections in this process: catch-up, then live, until stopped.

    ``read_models`` defaults to the event store's own database. ``worker_id``
    names this worker in leases (default: host, pid and a random suffix).
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
    ) -> None:
        names = [p.name for p in projections]
        if not all(isinstance(p, Projection) and p.name for p in projections):
            raise InvalidInput("projections are Projection instances with a name")
        if len(set(names)) != len(names):
            raise InvalidInput(f"projection names must be unique, got {names}")
        if not lease_seconds > 0 or not idle_wait > 0 or retries < 0 or not retry_delay >= 0:
            raise InvalidInput("lease_seconds and idle_wait must be > 0, retries and retry_delay >= 0")
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.db = read_models if read_models is not None else read_models_for(store)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.retries = retries
        self.retry_delay = retry_delay
        self.idle_wait = idle_wait
        self.stopping = asyncio.Event()
        self.workers: dict[str, _Worker] = {}
        self.rebuilds: dict[str, _Worker] = {}
        self._progress: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Create missing tables, then start a worker per projection. Idempotent."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        await self.store.open()
        await asyncio.to_thread(self._setup)
        for name, projection in self.projections.items():
            generation = await asyncio.to_thread(self._register, projection)
            self._start_worker(name, _Worker(self, projection, generation))
        self._started = True

    def _start_worker(self, name: str, worker: _Worker) -> None:
        self.workers[name] = worker
        worker.task = asyncio.create_task(worker.run(), name=f"projection {name}")

    async def stop(self) -> None:
        """Stop every worker, giving its partitions back for others to take at once."""
        self.stopping.set()
        tasks = [w.task for w in [*self.workers.values(), *self.rebuilds.values()] if w.task]
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in [*self.workers.values(), *self.rebuilds.values()]:
            with contextlib.suppress(EventVaultError):
                await asyncio.to_thread(w._release_all)  # noqa: SLF001
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
            from eventvault.projections._db import BOOKKEEPING  # noqa: PLC0415

            for statement in BOOKKEEPING:
                self.db.execute(conn, statement)

    def _register(self, projection: Projection) -> int:
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
            # A restart is the way to retry after a fix: clear recorded failures.
            self.db.execute(
                conn,
                "UPDATE ev_partition SET error = NULL, error_at = NULL, error_tx = NULL, error_pos = NULL, "
                "error_event = NULL WHERE name = ? AND generation = ?",
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

    # -- progress and waiting -------------------------------------------------------------

    def notify_progress(self) -> None:
        """Called from worker threads after each committed batch."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event, self._progress = self._progress, None
        if event is not None:
            event.set()

    async def wait_for(
        self, checkpoint: Checkpoint | str, *, timeout: float, names: Sequence[str] | None = None
    ) -> bool:
        """Wait until the projections (all, or ``names``) have passed ``checkpoint``; False on timeout.

        Read-your-writes: pass the checkpoint a command returned, then query.
        Progress made by workers in other processes is seen by polling.
        """
        target = Checkpoint.parse(checkpoint)
        wanted = list(self.projections) if names is None else list(names)
        unknown = [n for n in wanted if n not in self.projections]
        if unknown:
            raise InvalidInput(f"unknown projections {unknown}; this runner has {sorted(self.projections)}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._progress is None:
                self._progress = asyncio.Event()
            progress = self._progress
            if all(cp >= target for cp in (await asyncio.to_thread(self._checkpoints, wanted)).values()):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.25)):
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
            cps = [_cp(r[1], r[2]) for r in info["partitions"]]
            cp = min(cps) if cps else START
            applied = sum(int(r[3]) for r in info["partitions"])
            errors = [r for r in info["partitions"] if r[4] is not None]
            last_error = None
            if errors:
                r = errors[0]
                last_error = ProjectionError(
                    str(r[4]), int(r[7]), f"{int(r[6])}.{int(r[7])}", r[8], float(r[5])
                )
            state: State
            if errors:
                state = "failed"
            elif worker is not None:
                state = worker.state
            else:
                state = "stopped"
            lag_events = max(0, head.position - cp.position) if head > cp else 0
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
                    last_error=last_error or (worker.error if worker else None),
                    rebuild=self._rebuild_progress(rebuild, head),
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
        for name in self.projections:
            proj = self.db.query(
                "SELECT generation, version, partitions FROM ev_projection WHERE name = ?", (name,)
            )
            if not proj:
                continue
            generation = int(proj[0][0])
            parts = self.db.query(
                "SELECT part, cp_tx, cp_pos, applied, error, error_at, error_tx, error_pos, error_event "
                "FROM ev_partition WHERE name = ? AND generation = ? ORDER BY part",
                (name, generation),
            )
            out[name] = {"projection": tuple(int(x) for x in proj[0]), "partitions": parts}
        return out

    def _rebuild_progress(self, worker: _Worker | None, head: Checkpoint) -> RebuildProgress | None:
        return None if worker is None else self._progress_of(worker, head)

    def _progress_of(self, worker: _Worker, head: Checkpoint) -> RebuildProgress:
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
            None if eta is None else round(eta, 1),
            None if worker.error is None else worker.error.message,
        )

    # -- control --------------------------------------------------------------------------

    async def rebuild(self, name: str) -> RebuildProgress:
        """Rebuild ``name`` from the start into new tables while the old ones keep serving.

        When the new tables have caught up with the live ones they replace them
        in one transaction (queries see the old or the new, never a mix).
        Returns at once; follow the progress in :meth:`status`.
        """
        if name not in self.projections:
            raise InvalidInput(f"unknown projection {name!r}; this runner has {sorted(self.projections)}")
        if not self._started:
            raise InvalidInput("start the runner before rebuilding")
        current = self.rebuilds.get(name)
        head = await self.store.head()
        if current is not None and current.task is not None and not current.task.done():
            return self._progress_of(current, head)
        projection = self.projections[name]
        generation = await asyncio.to_thread(self._new_generation, type(projection))
        worker = _Worker(self, projection, generation, rebuild=True)
        worker.total = head.position
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
            active = self.db.execute(
                conn, "SELECT generation FROM ev_projection WHERE name = ?", (cls.name,)
            ).fetchone()
            generation = max(int(row[0] or 0), int(active[0])) + 1
            # Leftovers of an abandoned rebuild are dropped before building anew.
            for stale in range(int(active[0]) + 1, generation):
                for physical in cls.physical_names(stale).values():
                    self.db.execute(conn, f"DROP TABLE IF EXISTS {physical}")
                self.db.execute(
                    conn, "DELETE FROM ev_partition WHERE name = ? AND generation = ?", (cls.name, stale)
                )
            self._create_generation(conn, cls, generation)
        return generation

    async def resume(self, name: str) -> None:
        """Clear a failed projection's error and run it again from where it stopped."""
        if name not in self.projections:
            raise InvalidInput(f"unknown projection {name!r}; this runner has {sorted(self.projections)}")
        worker = self.workers.get(name)
        if worker is not None and worker.task is not None and not worker.task.done():
            return
        projection = self.projections[name]
        generation = await asyncio.to_thread(self._register, projection)
        self._start_worker(name, _Worker(self, projection, generation))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the read models (blocking; call it from a thread)."""
        return self.db.query(sql, params)
