"""Test helpers shipped with eventvault.

- :func:`given` — given/when/then scenarios for aggregates.
- :func:`eventually` and :func:`eventually_async` — wait, with a generous deadline, for
  what another thread, process or timer moves; a failure shows the last value seen.
- :mod:`eventvault.testing.contract` — the event store contract suite (needs
  pytest and pytest-asyncio): subclass it with a ``store_factory`` fixture to run
  it against any backend.
"""

from eventvault.testing.scenario import Scenario, given
from eventvault.testing.waiting import DEADLINE, eventually, eventually_async

__all__ = ["DEADLINE", "Scenario", "eventually", "eventually_async", "given"]
