"""Given/when/then for aggregates: given past events, when a command, then events or an error.

::

    (given(Account, AccountOpened("Ada", "EUR"))
        .when(lambda account: account.withdraw(Decimal("5"), "rent"))
        .then_raises(InsufficientFunds))

The aggregate is rebuilt by replaying the given events (the same path the
repository uses), so a scenario also proves that appliers accept those events.
A command that creates an aggregate (a classmethod returning one) is tested
with no given events; the returned aggregate's events are the outcome.

Commands decided on a dynamic consistency boundary (see :mod:`eventvault.decisions`)
are async handlers of a store: :func:`given_events` puts the given events, with
their tags, in a fresh ``memory://`` store, runs the handler on it, and compares
what it appended, data and tags::

    await (given_events(NewEvent(UserRegistered("ada"), tags=["username:ada"]))
        .when(lambda store: register(store, "ada"))
        .then_raises(UsernameTaken))
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from eventvault.domain import Aggregate, EventRegistry
from eventvault.store import EventStore, NewEvent, Query, RecordedEvent
from eventvault.store.memory import MemoryEventStore

__all__ = ["DecisionScenario", "Scenario", "given", "given_events"]

A = TypeVar("A", bound=Aggregate)

SCENARIO_ID = "00000000-0000-7000-8000-000000000001"


class Scenario(Generic[A]):
    """One given/when/then case. Build it with :func:`given`."""

    def __init__(self, cls: type[A], events: tuple[object, ...], aggregate_id: str = SCENARIO_ID) -> None:
        self.cls = cls
        self.given_events = events
        self.aggregate_id = aggregate_id
        self._command: Callable[[A], Any] | None = None

    def when(self, command: Callable[[A], Any]) -> Scenario[A]:
        """The command, as a function of the aggregate rebuilt from the given events."""
        self._command = command
        return self

    def _run(self) -> tuple[A, list[object]]:
        if self._command is None:
            raise AssertionError("a scenario needs .when(command) before .then")
        aggregate = self.cls.replay(self.aggregate_id, self.given_events)
        outcome = self._command(aggregate)
        if isinstance(outcome, Aggregate) and outcome is not aggregate:
            return outcome, list(outcome.pending_events)  # type: ignore[return-value]
        return aggregate, list(aggregate.pending_events)

    def then(self, *expected: object) -> A:
        """Assert the command recorded exactly ``expected``, in order; returns the aggregate."""
        aggregate, recorded = self._run()
        if recorded != list(expected):
            raise AssertionError(
                "the command recorded other events than expected\n"
                f"  expected: {list(expected)!r}\n  recorded: {recorded!r}"
            )
        return aggregate

    def then_nothing(self) -> A:
        """Assert the command recorded no event."""
        return self.then()

    def then_raises(self, error: type[BaseException], match: str | None = None) -> BaseException:
        """Assert the command raised ``error`` (message searched for ``match``) and recorded nothing."""
        try:
            aggregate, recorded = self._run()
        except error as exc:
            if match is not None and not re.search(match, str(exc)):
                raise AssertionError(f"{type(exc).__name__}({str(exc)!r}) does not match {match!r}") from exc
            return exc
        raise AssertionError(
            f"expected {error.__name__}, but the command recorded {recorded!r} on {aggregate!r}"
        )


def given(cls: type[A], *events: object, aggregate_id: str = SCENARIO_ID) -> Scenario[A]:
    """Start a scenario: an aggregate of ``cls`` that has had ``events``."""
    return Scenario(cls, events, aggregate_id)


def _shown(data: object, tags: tuple[str, ...]) -> str:
    return f"{data!r} tags={list(tags)}" if tags else repr(data)


class DecisionScenario:
    """Given stored events, when an async command handler runs on the store, then what it appended."""

    def __init__(self, events: tuple[NewEvent | object, ...], registry: EventRegistry | None) -> None:
        self.given_events = events
        self.registry = registry
        self._handler: Callable[[EventStore], Awaitable[Any]] | None = None

    def when(self, handler: Callable[[EventStore], Awaitable[Any]]) -> DecisionScenario:
        """The command, as an async function of a store holding the given events."""
        self._handler = handler
        return self

    async def _run(self) -> tuple[list[RecordedEvent], BaseException | None]:
        if self._handler is None:
            raise AssertionError("a scenario needs .when(handler) before .then")
        async with MemoryEventStore(registry=self.registry) as store:
            for e in self.given_events:  # one append each: positions as if written one by one
                await store.append_events([e])
            head = (await store.head()).position
            try:
                await self._handler(store)
            except Exception as exc:  # noqa: BLE001 - the outcome is checked by the caller
                error: BaseException | None = exc
            else:
                error = None
            appended = list((await store.read(Query.all(), after=head)).events)
        return appended, error

    async def then(self, *expected: NewEvent | object) -> list[RecordedEvent]:
        """Assert the handler appended exactly ``expected`` (data and tags; a bare event has none)."""
        appended, error = await self._run()
        if error is not None:
            raise AssertionError(f"the handler raised {error!r}") from error
        want = [
            (e.data, tuple(dict.fromkeys(e.tags))) if isinstance(e, NewEvent) else (e, ()) for e in expected
        ]
        got = [(e.data, e.tags) for e in appended]
        if got != want:
            raise AssertionError(
                "the handler appended other events than expected\n"
                f"  expected: {[_shown(*w) for w in want]}\n  appended: {[_shown(*g) for g in got]}"
            )
        return appended

    async def then_nothing(self) -> None:
        """Assert the handler appended no event (and raised nothing)."""
        await self.then()

    async def then_raises(self, error: type[BaseException], match: str | None = None) -> BaseException:
        """Assert the handler raised ``error`` (message searched for ``match``) and appended nothing."""
        appended, raised = await self._run()
        if not isinstance(raised, error):
            raise AssertionError(  # noqa: TRY004 - a failed assertion, not a bad argument
                f"expected {error.__name__}, but the handler "
                + (f"raised {raised!r}" if raised is not None else f"appended {appended!r}")
            ) from raised
        if match is not None and not re.search(match, str(raised)):
            raise AssertionError(f"{type(raised).__name__}({str(raised)!r}) does not match {match!r}")
        if appended:
            raise AssertionError(f"{error.__name__} was raised, but {appended!r} were appended")
        return raised


def given_events(*events: NewEvent | object, registry: EventRegistry | None = None) -> DecisionScenario:
    """Start a scenario of a store holding ``events`` (NewEvent to give them tags)."""
    return DecisionScenario(events, registry)
