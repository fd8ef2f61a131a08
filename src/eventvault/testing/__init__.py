"""Test helpers shipped with eventvault.

- :func:`given` — given/when/then scenarios for aggregates; :func:`given_events` the
  same for command handlers deciding on a dynamic consistency boundary.
- :func:`eventually` and :func:`eventually_async` — wait, with a generous deadline, for
  what another thread, process or timer moves; a failure shows the last value seen.
- :mod:`eventvault.testing.contract` — the event store contract suite (needs
  pytest and pytest-asyncio): subclass it with a ``store_factory`` fixture to run
  it against any backend.
"""

from eventvault.testing.scenario import DecisionScenario, Scenario, given, given_events
from eventvault.testing.waiting import DEADLINE, eventually, eventually_async

__all__ = [
    "DEADLINE",
    "DecisionScenario",
    "Scenario",
    "eventually",
    "eventually_async",
    "given",
    "given_events",
]
