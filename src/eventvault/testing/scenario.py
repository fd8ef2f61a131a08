"""Given/when/then for aggregates: given past events, when a command, then events or an error.

::

    (given(Account, AccountOpened("Ada", "EUR"))
        .when(lambda account: account.withdraw(Decimal("5"), "rent"))
        .then_raises(InsufficientFunds))

The aggregate is rebuilt by replaying the given events (the same path the
repository uses), so a scenario also proves that appliers accept those events.
A command that creates an aggregate (a classmethod returning one) is tested
with no given events; the returned aggregate's events are the outcome.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from eventvault.domain import Aggregate

__all__ = ["Scenario", "given"]

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
