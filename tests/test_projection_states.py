"""The projection worker's state machine: every transition, every illegal one, and what status reports."""

from __future__ import annotations

import itertools

import pytest

from eventvault.projections import ProjectionError
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
    IllegalTransition,
    NoPartitions,
    PageDone,
    Phase,
    WorkerState,
    next_state,
    reported_state,
)

OLD = ProjectionError("StoreUnavailable: the database is away", None, None, None, 1.0)
NEW = ProjectionError("ValueError: cannot apply 13 (event proj.Added v14 of p-1)", 14, "0/14", "e-14", 2.0)

EVERY_HAPPENING: list[Happening] = [
    NoPartitions(),
    Behind(),
    CaughtUp(),
    Committed(),
    PageDone(),
    EventRetrying(NEW),
    DatabaseError(NEW),
    Fenced(),
    GaveUp(NEW),
    Exited(),
]
RUNNING = (Phase.STARTING, Phase.IDLE, Phase.CATCHING_UP, Phase.LIVE, Phase.RETRYING)
APPLYING = (Phase.CATCHING_UP, Phase.RETRYING)
KEPT = object()  # the error the worker had before

# What each happening leads to, from each phase where it can happen: (phase, error).
# Written out here, apart from the code, as docs/decisions/0021-projection-worker-states.md draws it.
EXPECTED: dict[tuple[Phase, type], tuple[Phase | None, object]] = {
    **{(p, NoPartitions): (Phase.IDLE, KEPT) for p in RUNNING},
    **{(p, Behind): (Phase.CATCHING_UP, KEPT) for p in RUNNING},
    **{(p, CaughtUp): (Phase.LIVE, None) for p in RUNNING},
    **{(p, DatabaseError): (Phase.RETRYING, NEW) for p in RUNNING},
    **{(p, Fenced): (None, KEPT) for p in RUNNING},  # None: the phase it was in
    **{(p, GaveUp): (Phase.FAILED, NEW) for p in (*RUNNING, Phase.FAILED)},
    **{(p, Exited): (Phase.STOPPED, KEPT) for p in RUNNING},
    (Phase.FAILED, Exited): (Phase.FAILED, KEPT),
    **{(p, Committed): (Phase.CATCHING_UP, None) for p in APPLYING},
    **{(p, PageDone): (None, None) for p in APPLYING},
    **{(p, EventRetrying): (Phase.RETRYING, NEW) for p in APPLYING},
}

PAIRS = list(itertools.product(Phase, EVERY_HAPPENING))


def _id(pair: tuple[Phase, Happening]) -> str:
    return f"{pair[0].name}-{type(pair[1]).__name__}"


LEGAL = [pair for pair in PAIRS if (pair[0], type(pair[1])) in EXPECTED]
ILLEGAL = [pair for pair in PAIRS if (pair[0], type(pair[1])) not in EXPECTED]


@pytest.mark.parametrize("pair", LEGAL, ids=[_id(p) for p in LEGAL])
def test_each_transition_leads_to_its_phase_and_keeps_or_replaces_the_error(
    pair: tuple[Phase, Happening],
) -> None:
    """A worker told of what can happen in its phase moves to the phase the table says, with its error."""
    phase, happening = pair
    want_phase, want_error = EXPECTED[phase, type(happening)]
    after = next_state(WorkerState(phase, OLD), happening)
    assert after.phase is (phase if want_phase is None else want_phase)
    assert after.error is (OLD if want_error is KEPT else want_error)


@pytest.mark.parametrize("pair", ILLEGAL, ids=[_id(p) for p in ILLEGAL])
def test_what_cannot_happen_in_a_phase_is_refused(pair: tuple[Phase, Happening]) -> None:
    """Anything the table does not allow raises IllegalTransition naming the happening and the phase."""
    phase, happening = pair
    state = WorkerState(phase, OLD)
    with pytest.raises(
        IllegalTransition, match=f"{type(happening).__name__} cannot happen .* {phase.name}"
    ) as info:
        next_state(state, happening)
    assert (info.value.state, info.value.happening) == (state, happening)


def test_a_commit_after_the_worker_stopped_is_refused() -> None:
    """A stopped worker is final: a batch committing for it is a bug, not a way back to catching up."""
    with pytest.raises(IllegalTransition, match="Committed cannot happen to a worker in phase STOPPED"):
        next_state(WorkerState(Phase.STOPPED), Committed())


def test_the_table_here_names_every_happening_the_worker_knows() -> None:
    """A happening added to the worker must be added to the table above, which then covers it."""
    assert {type(h) for h in EVERY_HAPPENING} == set(Happening.__args__)
    assert {(p, type(h)) for p, h in LEGAL} == set(EXPECTED)


def test_a_poison_event_runs_the_path_its_retries_take() -> None:
    """Catching up, a failing event is retried, then the worker gives up, and its exit keeps the failure."""
    state = WorkerState()
    for happening in (Behind(), EventRetrying(OLD), EventRetrying(NEW), GaveUp(NEW), Exited()):
        state = next_state(state, happening)
    assert state == WorkerState(Phase.FAILED, NEW)


def test_a_database_error_is_cleared_by_the_next_commit() -> None:
    """Retrying after a database error, the first batch that commits makes the worker catch up without it."""
    state = next_state(WorkerState(Phase.LIVE), DatabaseError(OLD))
    state = next_state(next_state(state, Behind()), Committed())
    assert state == WorkerState(Phase.CATCHING_UP)


def _reported(worker: WorkerState | None, **kwargs: bool) -> str:
    given = {"running": True, "failed_in_database": False, "leased_elsewhere": False, "caught_up": False}
    given.update(kwargs)
    return reported_state(worker, lagging=not given["caught_up"], **given)


@pytest.mark.parametrize(
    ("phase", "caught_up", "shown"),
    [
        (Phase.STARTING, False, "starting"),
        (Phase.STARTING, True, "live"),
        (Phase.CATCHING_UP, False, "catching_up"),
        (Phase.CATCHING_UP, True, "live"),
        (Phase.RETRYING, False, "retrying"),
        (Phase.RETRYING, True, "live"),
        (Phase.IDLE, True, "idle"),
        (Phase.LIVE, False, "live"),
        (Phase.FAILED, True, "failed"),
    ],
)
def test_a_running_worker_reports_its_phase_or_live_once_the_database_says_it_caught_up(
    phase: Phase, caught_up: bool, shown: str
) -> None:
    """Status shows the running worker's phase, except live as soon as its checkpoints reach the head."""
    assert _reported(WorkerState(phase), caught_up=caught_up) == shown


def test_a_failure_recorded_in_the_database_is_reported_whatever_the_worker_does() -> None:
    """A failure recorded on a partition (by any process) makes the projection failed, even if live here."""
    assert _reported(WorkerState(Phase.LIVE), failed_in_database=True, caught_up=True) == "failed"
    assert _reported(None, running=False, failed_in_database=True) == "failed"


def test_without_a_running_worker_here_the_leases_held_elsewhere_decide() -> None:
    """No worker runs here: live or catching up if others hold leases, stopped if nobody does."""
    assert _reported(None, running=False, leased_elsewhere=True, caught_up=False) == "catching_up"
    assert _reported(None, running=False, leased_elsewhere=True, caught_up=True) == "live"
    assert _reported(WorkerState(Phase.STOPPED), running=False) == "stopped"
    assert _reported(WorkerState(Phase.FAILED), running=False) == "failed"
    assert _reported(None, running=False) == "stopped"
