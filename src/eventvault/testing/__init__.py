"""Test helpers shipped with eventvault.

- :func:`given` — given/when/then scenarios for aggregates.
- :mod:`eventvault.testing.contract` — the event store contract suite (needs
  pytest and pytest-asyncio): subclass it with a ``store_factory`` fixture to run
  it against any backend.
"""

from eventvault.testing.scenario import Scenario, given

__all__ = ["Scenario", "given"]
