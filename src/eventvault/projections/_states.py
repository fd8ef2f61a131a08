"""The projection worker's state machine: its states, what happens to it, and the one transition function.

A worker is in one :class:`WorkerState`: a :class:`Phase` and the error that
holds it back, if any. The worker never sets either by hand: it tells
:func:`next_state` what happened (one of the :data:`Happening` values) and
keeps what comes back. The status a projection reports derives from that state
(:func:`reported_state`). docs/decisions/0021-projection-worker-states.md has
the diagram::

    STARTING, IDLE, LIVE, CATCHING_UP, RETRYING  (running)
        NoPartitions   -> IDLE          error kept
        Behind         -> CATCHING_UP   error kept
        CaughtUp       -> LIVE          error cleared
        DatabaseError  -> RETRYING      error: the database's
        Fenced         -> unchanged     (leases and checkpoints resync)
        GaveUp         -> FAILED        error: why
        Exited         -> STOPPED       error kept
    CATCHING_UP, RETRYING  (a page in hand)
        Committed      -> CATCHING_UP   error cleared
        PageDone       -> unchanged     error cleared
        EventRetrying  -> RETRYING      error: the event's
    FAILED
        GaveUp         -> FAILED        error: the latest
        Exited         -> FAILED        error kept
    STOPPED: final.

Anything else is a bug in the worker: :class:`IllegalTransition`. An
operator's pause is no phase: the workers of a paused projection hold no
partition (``idle``), and :func:`reported_state` reports it as ``paused``
(docs/decisions/0029-projection-pause-and-reset.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from eventvault.projections._status import ProjectionError, State

__all__ = [
    "Behind",
    "CaughtUp",
    "Committed",
    "DatabaseError",
    "EventRetrying",
    "Exited",
    "Fenced",
    "GaveUp",
    "Happening",
    "IllegalTransition",
    "NoPartitions",
    "PageDone",
    "Phase",
    "WorkerState",
    "next_state",
    "reported_state",
]


class Phase(enum.Enum):
    """What a worker is doing; the values are the states :class:`ProjectionStatus` reports."""

    STARTING = "starting"
    """Created, has not looked at its leases or the log yet."""
    IDLE = "idle"
    """Holds no partition (other workers hold them all, or all have failed)."""
    CATCHING_UP = "catching_up"
    """Applying a page of events it read."""
    LIVE = "live"
    """Read the log to its end: waits for new events."""
    RETRYING = "retrying"
    """Held back by an error: the database's (retried without limit) or an event's (retried a few times)."""
    FAILED = "failed"
    """Gave up: an event failed every retry, its rebuild was replaced, or the worker crashed."""
    STOPPED = "stopped"
    """The worker's task has ended without failing."""


RUNNING: Final = frozenset({Phase.STARTING, Phase.IDLE, Phase.CATCHING_UP, Phase.LIVE, Phase.RETRYING})
APPLYING: Final = frozenset({Phase.CATCHING_UP, Phase.RETRYING})
"""The phases in which the worker has a page of events in hand."""


@dataclass(frozen=True, slots=True)
class WorkerState:
    """A worker's phase and the error holding it back (or that held it back last, until cleared)."""

    phase: Phase = Phase.STARTING
    error: ProjectionError | None = None


# -- what happens to a worker ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoPartitions:
    """The worker's lease sync left it no partition to work on."""


@dataclass(frozen=True, slots=True)
class Behind:
    """The worker read a page of events past its checkpoint and is about to apply it."""


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The worker read the log to its end: nothing left to apply."""


@dataclass(frozen=True, slots=True)
class Committed:
    """A batch committed with its checkpoint: whatever kept the worker from writing is over."""


@dataclass(frozen=True, slots=True)
class PageDone:
    """The worker is done with a page: applied, or the retries of its failing event cut short by a stop."""


@dataclass(frozen=True, slots=True)
class EventRetrying:
    """An event's handler raised: it is retried alone after a pause."""

    error: ProjectionError


@dataclass(frozen=True, slots=True)
class DatabaseError:
    """The database or the store failed (not an event): retried without limit, with backoff."""

    error: ProjectionError


@dataclass(frozen=True, slots=True)
class Fenced:
    """Another worker took a partition over, or its checkpoint moved: the batch rolled back, leases resync."""


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The worker stops for good: a poison event, an abandoned rebuild, or a crash."""

    error: ProjectionError


@dataclass(frozen=True, slots=True)
class Exited:
    """The worker's task is ending (a stop, a rebuild that swapped in, or after failing)."""


Happening = (
    NoPartitions
    | Behind
    | CaughtUp
    | Committed
    | PageDone
    | EventRetrying
    | DatabaseError
    | Fenced
    | GaveUp
    | Exited
)


class IllegalTransition(RuntimeError):
    """A worker was told of something that cannot happen in its state: a bug in the worker."""

    def __init__(self, state: WorkerState, happening: Happening) -> None:
        super().__init__(f"{type(happening).__name__} cannot happen to a worker in phase {state.phase.name}")
        self.state = state
        self.happening = happening


def next_state(state: WorkerState, happening: Happening) -> WorkerState:  # noqa: C901, PLR0911 - the table
    """The state a worker in ``state`` is in once ``happening`` happened; raises IllegalTransition."""
    phase = state.phase
    match happening:
        case NoPartitions() if phase in RUNNING:
            return replace(state, phase=Phase.IDLE)
        case Behind() if phase in RUNNING:
            return replace(state, phase=Phase.CATCHING_UP)
        case CaughtUp() if phase in RUNNING:
            return WorkerState(Phase.LIVE)
        case Committed() if phase in APPLYING:
            return WorkerState(Phase.CATCHING_UP)
        case PageDone() if phase in APPLYING:
            return replace(state, error=None)
        case EventRetrying(error) if phase in APPLYING:
            return WorkerState(Phase.RETRYING, error)
        case DatabaseError(error) if phase in RUNNING:
            return WorkerState(Phase.RETRYING, error)
        case Fenced() if phase in RUNNING:
            return state
        case GaveUp(error) if phase in RUNNING or phase is Phase.FAILED:
            return WorkerState(Phase.FAILED, error)
        case Exited() if phase in RUNNING:
            return replace(state, phase=Phase.STOPPED)
        case Exited() if phase is Phase.FAILED:
            return state
    raise IllegalTransition(state, happening)


_REPORTED: Final[dict[Phase, State]] = {
    Phase.STARTING: "starting",
    Phase.IDLE: "idle",
    Phase.CATCHING_UP: "catching_up",
    Phase.LIVE: "live",
    Phase.RETRYING: "retrying",
    Phase.FAILED: "failed",
    Phase.STOPPED: "stopped",
}


def reported_state(  # noqa: PLR0913 - what a status is derived from
    worker: WorkerState | None,
    *,
    running: bool,
    failed_in_database: bool,
    leased_elsewhere: bool,
    caught_up: bool,
    lagging: bool,
    paused: bool = False,
) -> State:
    """The state a projection's status reports.

    ``worker`` is the state of this process's worker (None: none here) and
    ``running`` whether its task still runs. The database has the last word on
    failures (``failed_in_database``: a partition recorded an error, in any
    process) and on progress: a running worker that is ``caught_up`` by the
    checkpoints the database holds is live at once, as ``wait_for`` sees it,
    not when it next looks at the log. Without a worker running here, the
    projection is live or catching up (``lagging``) if workers elsewhere hold
    leases (``leased_elsewhere``), else stopped. A projection an operator
    ``paused`` is paused, unless it failed: its workers hold nothing and idle.
    """
    if failed_in_database or (worker is not None and worker.phase is Phase.FAILED):
        return "failed"
    if paused:
        return "paused"
    if running and worker is not None:
        if worker.phase in (Phase.STARTING, Phase.CATCHING_UP, Phase.RETRYING) and caught_up:
            return "live"
        return _REPORTED[worker.phase]
    if leased_elsewhere:
        return "catching_up" if lagging else "live"
    return "stopped"
