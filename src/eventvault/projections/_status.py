"""What a projection's status says, and how it is put together from the database and the local worker.

The database has each partition's checkpoint, lease and recorded failure, as
every process sees them; the worker of this process (if any) adds its state
(:mod:`eventvault.projections._states`), its rate and the partitions it holds,
and a rebuild run here its progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from eventvault.errors import StoreError
from eventvault.projections._leases import checkpoint_at
from eventvault.projections._states import Phase, reported_state
from eventvault.store.records import START, Checkpoint, HorizonLag

if TYPE_CHECKING:
    from collections.abc import Iterable

    from eventvault.projections._db import ReadModels
    from eventvault.projections._projection import Projection
    from eventvault.projections._worker import Worker
    from eventvault.store.base import EventStore

__all__ = [
    "PartitionRow",
    "ProjectionError",
    "ProjectionStatus",
    "RebuildProgress",
    "State",
    "StoredProjection",
    "progress_at_swap",
    "progress_of",
    "projection_status",
    "read_stored",
    "rebuild_progress",
]

State = Literal["starting", "catching_up", "live", "idle", "retrying", "failed", "stopped", "paused"]


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
    paused: bool = False
    """An operator paused it (:meth:`ProjectionRunner.pause`): no worker applies events until resumed."""


# -- a rebuild's progress --------------------------------------------------------------------


def progress_at_swap(worker: Worker) -> RebuildProgress:
    """A rebuild's final progress, taken as it swaps in: everything up to its checkpoint, done."""
    done = worker.checkpoint().position
    elapsed = max(time.monotonic() - worker.started, 1e-6)
    return RebuildProgress(worker.generation, "done", done, done, round(done / elapsed, 1), None)


def progress_of(worker: Worker, head: Checkpoint) -> RebuildProgress:
    """The progress of the rebuild ``worker`` runs (or ran), against ``head``."""
    if worker.finished is not None:
        return worker.finished
    done = worker.checkpoint().position
    total = max(head.position, done)
    elapsed = max(time.monotonic() - worker.started, 1e-6)
    rate = done / elapsed
    state: Literal["running", "done", "failed"] = (
        "done" if worker.swapped else "failed" if worker.state.phase is Phase.FAILED else "running"
    )
    eta = None if rate <= 0 or state != "running" else (total - done) / rate
    error = worker.state.error
    return RebuildProgress(
        worker.generation,
        state,
        done,
        total,
        round(rate, 1),
        None if eta is None else round(eta, 3),
        None if error is None else error.message,
    )


def rebuild_progress(worker: Worker | None, head: Checkpoint, active: int) -> RebuildProgress | None:
    """What status shows of the rebuild run here (None: none, or one a newer generation replaced)."""
    # A rebuild run here that a newer generation (rebuilt elsewhere, say by the CLI)
    # has replaced since is history: the status shows the generation that serves.
    if worker is None or (worker.generation < active and not worker.running):
        return None
    return progress_of(worker, head)


# -- what the database holds -------------------------------------------------------------------


class PartitionRow(NamedTuple):
    """A partition of the serving generation, as status reads it from ``ev_partition``."""

    part: int
    cp_tx: int
    cp_pos: int
    applied: int
    error: str | None
    error_at: float | None
    error_tx: int | None
    error_pos: int | None
    error_event: str | None
    owner: str | None
    expires: float
    error_type: str | None
    error_stream: str | None

    @property
    def checkpoint(self) -> Checkpoint:
        return checkpoint_at(self.cp_tx, self.cp_pos)

    def recorded_error(self) -> ProjectionError | None:
        """The failure recorded on this partition, if any."""
        if self.error is None:
            return None
        return ProjectionError(
            str(self.error),
            int(self.error_pos),  # type: ignore[arg-type] # set together with error
            str(checkpoint_at(self.error_tx, self.error_pos)),
            self.error_event,
            float(self.error_at),  # type: ignore[arg-type] # set together with error
            self.error_type,
            self.error_stream,
        )


_PARTITION_COLUMNS = ", ".join(PartitionRow._fields)


@dataclass(frozen=True, slots=True)
class StoredProjection:
    """A projection's serving generation as the database has it, read at the database's time ``now``."""

    generation: int
    version: int
    partitions: int
    rows: tuple[PartitionRow, ...]
    now: float
    paused: bool = False

    def checkpoint(self) -> Checkpoint:
        """Where the projection is: the lowest checkpoint over its partitions."""
        return min((r.checkpoint for r in self.rows), default=START)

    def holders(self) -> tuple[str, ...]:
        """The workers holding a live lease on a partition, sorted."""
        return tuple(
            sorted({str(r.owner) for r in self.rows if r.owner is not None and r.expires > self.now})
        )

    def first_error(self) -> ProjectionError | None:
        return next((e for e in (r.recorded_error() for r in self.rows) if e is not None), None)


def read_stored(db: ReadModels, names: Iterable[str], *, started: bool) -> dict[str, StoredProjection]:
    """The stored state of the projections ``names`` that the database has (blocking).

    Before the bookkeeping tables exist (``started`` False: this runner has not
    made them), there is none.
    """
    out: dict[str, StoredProjection] = {}
    try:
        ((now,),) = db.query(f"SELECT {db.now_sql}")
        for name in names:
            proj = db.query(
                "SELECT generation, version, partitions, paused FROM ev_projection WHERE name = ?", (name,)
            )
            if not proj:
                continue
            generation, version, partitions, paused = (int(x) for x in proj[0])
            rows = db.query(
                f"SELECT {_PARTITION_COLUMNS} FROM ev_partition "
                "WHERE name = ? AND generation = ? ORDER BY part",
                (name, generation),
            )
            out[name] = StoredProjection(
                generation,
                version,
                partitions,
                tuple(PartitionRow(*r) for r in rows),
                float(now),
                paused=bool(paused),
            )
    except StoreError:
        if started:
            raise
        # Never started here and no bookkeeping tables yet: every projection is "starting".
        return {}
    return out


# -- the status --------------------------------------------------------------------------------


async def projection_status(  # noqa: PLR0913 - what a status is made of
    projection: Projection,
    stored: StoredProjection | None,
    worker: Worker | None,
    rebuild: Worker | None,
    *,
    store: EventStore,
    head: Checkpoint,
    held_back: HorizonLag | None,
) -> ProjectionStatus:
    """The status of ``projection``: ``stored`` in the database, this process's ``worker`` and ``rebuild``."""
    name = projection.name
    if stored is None:
        cls = type(projection)
        return ProjectionStatus(
            name=name,
            state="starting",
            generation=0,
            version=cls.version,
            checkpoint=str(START),
            head=str(head),
            lag_events=head.position,
            lag_seconds=0.0,
            events_per_second=None,
            applied=0,
            partitions=cls.partitions,
            owned_partitions=(),
            last_error=None,
            rebuild=None,
        )
    cp = stored.checkpoint()
    holders = stored.holders()
    last_error = stored.first_error()
    lag_events = max(0, head.position - cp.position) if head > cp else 0
    state = reported_state(
        None if worker is None else worker.state,
        running=worker is not None and worker.running,
        failed_in_database=last_error is not None,
        leased_elsewhere=bool(holders),
        caught_up=head <= cp,
        lagging=lag_events > 0,
        paused=stored.paused,
    )
    lag_seconds = 0.0
    if head > cp:
        page = await store.read_all(cp, limit=1)
        if page.events:
            lag_seconds = max(0.0, time.time() - page.events[0].recorded_at.timestamp())
    if last_error is None and worker is not None and state != "live":
        last_error = worker.state.error
    return ProjectionStatus(
        name=name,
        state=state,
        generation=stored.generation,
        version=stored.version,
        checkpoint=str(cp),
        head=str(head),
        lag_events=lag_events,
        lag_seconds=round(lag_seconds, 3),
        events_per_second=None if worker is None else round(worker.rate.value(), 1),
        applied=sum(int(r.applied) for r in stored.rows),
        partitions=stored.partitions,
        owned_partitions=tuple(sorted(worker.owned)) if worker else (),
        last_error=last_error,
        rebuild=rebuild_progress(rebuild, head, stored.generation),
        workers=holders,
        held_back=held_back,
        paused=stored.paused,
    )
