"""Running one step of one instance: load it, decide, append, or stop it after repeated failures.

Used by the runner for events of the log and for deadlines, and by the
given/when/then helpers, so a scenario runs exactly the code production runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from eventvault.errors import AggregateNotFound, ConcurrencyError, StoreError
from eventvault.processes._process import (
    Process,
    ProcessManager,
    ProcessStopped,
    Step,
    StepDone,
    step_event_id,
)
from eventvault.store.records import Metadata

if TYPE_CHECKING:
    from eventvault.repository import Repository
    from eventvault.store.records import RecordedEvent

__all__ = ["StepOutcome", "run_step"]

log = logging.getLogger("eventvault.processes")

_CONFLICTS = 20  # appends to an instance that lost a race, before that counts as a failure


@dataclass(frozen=True)
class StepOutcome:
    """What running a step came to."""

    state: Literal["done", "skipped", "stopped"]
    process: Process | None
    error: str | None = None


async def run_step(  # noqa: C901, PLR0913 - one loop (load, decide, append) and the ways it ends
    manager: ProcessManager[Any],
    repository: Repository,
    process_id: str,
    key: str,
    act: Callable[[Step[Any]], Awaitable[None]],
    *,
    starts: bool,
    event: RecordedEvent | None = None,
    now: datetime | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
) -> StepOutcome:
    """Run step ``key`` of instance ``process_id``, exactly once.

    Skipped if the instance does not exist (and ``starts`` is false), has
    ended, has stopped, or has done this step already. Errors of the store
    (:class:`StoreError`) propagate: the caller retries the step later, and
    the derived ids make that harmless. Anything else is retried ``retries``
    times, then stops the instance.
    """
    cls = manager.process
    retries = manager.retries if retries is None else retries
    delay = manager.retry_delay if retry_delay is None else retry_delay
    stream_id = cls.stream_id_for(process_id)
    metadata = Metadata(
        correlation_id=(event.metadata.correlation_id if event is not None else None) or process_id,
        causation_id=str(event.event_id) if event is not None else key,
        actor=f"process:{manager.name}",
    )
    failures = conflicts = 0
    error = ""
    while True:
        try:
            process = await repository.load(cls, process_id)
        except AggregateNotFound:
            if not starts:
                return StepOutcome("skipped", None)
            process = cls(process_id)
        if key in process.steps_done or process.ended or process.stopped is not None:
            return StepOutcome("skipped", process)
        step = Step(manager, process, key, repository, event, now or datetime.now(UTC), metadata)
        try:
            await act(step)
            process.record(StepDone(key))
            count = len(process.pending_events)
            ids = [step_event_id(stream_id, key, f"process-{i}") for i in range(count)]
            await repository.save(process, metadata=metadata, event_ids=ids)
        except StoreError:
            raise
        except ConcurrencyError as exc:
            # Another worker (or an earlier run of this one) wrote to the instance: decide again.
            conflicts += 1
            if conflicts <= _CONFLICTS:
                continue
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a failing step stops its instance, not the runner
            error = f"{type(exc).__name__}: {exc}"
        else:
            return StepOutcome("done", process)
        failures += 1
        if failures > retries:
            break
        log.warning(
            "%s %s step %s failed (%s); retrying in %.2fs", manager.name, process_id, key, error, delay
        )
        await asyncio.sleep(delay)
        delay *= 2
    log.error("%s %s stopped at step %s: %s", manager.name, process_id, key, error)
    return await _stop(manager, repository, process_id, key, error=error, metadata=metadata)


async def _stop(  # noqa: PLR0913 - the step, and why it stops
    manager: ProcessManager[Any],
    repository: Repository,
    process_id: str,
    key: str,
    *,
    error: str,
    metadata: Metadata,
) -> StepOutcome:
    cls = manager.process
    stream_id = cls.stream_id_for(process_id)
    for _ in range(_CONFLICTS):
        try:
            process = await repository.load(cls, process_id)
        except AggregateNotFound:
            process = cls(process_id)
        if process.stopped is not None or key in process.steps_done:
            return StepOutcome("stopped", process, process.stopped)
        process.record(ProcessStopped(key, error[:2000]))
        try:
            await repository.save(
                process, metadata=metadata, event_ids=[step_event_id(stream_id, key, "stopped")]
            )
        except ConcurrencyError:
            continue
        return StepOutcome("stopped", process, error)
    raise ConcurrencyError(f"{stream_id} kept changing while its step {key} was being stopped")
