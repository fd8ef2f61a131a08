"""Given/when/then for process managers: one step, in memory, through the runner's own code.

::

    (given_process(Fulfilment(), "o-1", streams={"stock-sku": [StockAdded(1)]})
        .when(OrderPlaced("o-1", "sku", 2, "ada", 10), stream_id="order-o-1")
        .then(OrderRejected("2 wanted, 1 left"), ProcessEnded()))

Given the instance's past events (``history``) and other streams' events
(``streams``), when an event lands in ``stream_id`` (or a deadline comes
due), then the instance records these events (the toolkit's ``StepDone``
left out) and the step appends ``appended`` to other streams — and nothing
anywhere else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from eventvault import ANY, Repository, open_store
from eventvault.processes import ProcessManager, StepDone, StepOutcome, fire_deadline, react

__all__ = ["ProcessScenario", "given_process"]

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from async code: a loop of its own
        return pool.submit(asyncio.run, coro).result()


class ProcessScenario:
    """One given/when/then case for a process manager. Build it with :func:`given_process`."""

    def __init__(
        self,
        manager: ProcessManager[Any],
        process_id: str,
        history: Sequence[object],
        streams: Mapping[str, Sequence[object]],
    ) -> None:
        self.manager = manager
        self.process_id = process_id
        self.history = list(history)
        self.streams = {k: list(v) for k, v in streams.items()}
        self._event: tuple[object, str] | None = None
        self._deadline: str | None = None

    def when(self, event: object, *, stream_id: str) -> ProcessScenario:
        """The event that lands in ``stream_id`` and calls for the step."""
        self._event = (event, stream_id)
        return self

    def when_deadline(self, name: str) -> ProcessScenario:
        """The instance's deadline ``name`` (scheduled in the history) comes due."""
        self._deadline = name
        return self

    async def _outcome(self) -> tuple[StepOutcome | None, list[object], dict[str, list[object]]]:
        if self._event is None and self._deadline is None:
            raise AssertionError(
                "a scenario needs .when(event, stream_id=) or .when_deadline(name) before .then"
            )
        process_stream = self.manager.process.stream_id_for(self.process_id)
        async with open_store("memory://") as store:
            for stream_id, events in self.streams.items():
                if events:
                    await store.append(stream_id, events, expected_version=ANY)
            if self.history:
                await store.append(process_stream, self.history, expected_version=ANY)
            before = {s: await store.stream_version(s) for s in [*self.streams, process_stream]}
            repository = Repository(store)
            outcome: StepOutcome | None
            if self._event is not None:
                event, stream_id = self._event
                result = await store.append(stream_id, [event], expected_version=ANY)
                [recorded] = await store.read_stream(stream_id, from_version=result.stream_version)
                before[stream_id] = result.stream_version
                outcome = await react(self.manager, repository, recorded)
            else:
                assert self._deadline is not None
                process = await repository.load(self.manager.process, self.process_id)
                due = process.deadlines.get(self._deadline)
                if due is None:
                    raise AssertionError(f"the history schedules no deadline {self._deadline!r}")
                outcome = await fire_deadline(self.manager, repository, self.process_id, self._deadline, due)
            changed: dict[str, list[object]] = {}
            page = await store.read_all(None, limit=10_000)
            for e in page.events:
                if e.stream_version > before.get(e.stream_id, 0):
                    changed.setdefault(e.stream_id, []).append(e.data)
            own = [e for e in changed.pop(process_stream, []) if not isinstance(e, StepDone)]
            return outcome, own, changed

    def then(self, *expected: object, appended: Mapping[str, Sequence[object]] | None = None) -> None:
        """Assert the step recorded exactly ``expected`` on the instance and ``appended`` elsewhere."""
        outcome, own, changed = _run(self._outcome())
        if outcome is not None and outcome.state == "stopped":
            raise AssertionError(f"the instance stopped: {outcome.error}")
        if own != list(expected):
            raise AssertionError(
                "the step recorded other events on the instance\n"
                f"  expected: {list(expected)!r}\n  recorded: {own!r}"
            )
        want = {k: list(v) for k, v in (appended or {}).items() if v}
        if changed != want:
            raise AssertionError(
                "the step appended other events to other streams\n"
                f"  expected: {want!r}\n  appended: {changed!r}"
            )

    def recorded(self) -> tuple[list[object], dict[str, list[object]]]:
        """Run the step; what it recorded on the instance (no ``StepDone``) and appended elsewhere."""
        _, own, changed = _run(self._outcome())
        return own, changed

    def then_nothing(self) -> None:
        """Assert the step did nothing at all (the event is for no instance, or the step was done)."""
        self.then()

    def then_stopped(self, match: str | None = None) -> str:
        """Assert the step failed for good and stopped the instance; returns the error."""
        outcome, _, _ = _run(self._outcome())
        if outcome is None or outcome.state != "stopped" or outcome.error is None:
            raise AssertionError(f"expected the instance to stop, but the step came to {outcome!r}")
        if match is not None and not re.search(match, outcome.error):
            raise AssertionError(f"the error {outcome.error!r} does not match {match!r}")
        return outcome.error


def given_process(
    manager: ProcessManager[Any],
    process_id: str,
    *,
    history: Sequence[object] = (),
    streams: Mapping[str, Sequence[object]] | None = None,
) -> ProcessScenario:
    """Start a scenario: instance ``process_id`` of ``manager``, with its past events and other streams."""
    return ProcessScenario(manager, process_id, history, streams or {})
