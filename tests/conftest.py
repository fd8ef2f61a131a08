"""Shared test setup. Backend-specific fixtures live beside their tests (tests/postgres/)."""

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from eventvault.projections import Session
from eventvault.store.records import RecordedEvent
from eventvault_ledger.read_models import AccountsProjection

# The contract suite ships inside the package, where pytest does not rewrite asserts by
# default; without this its failures would show a bare AssertionError, not the values.
pytest.register_assert_rewrite("eventvault.testing.contract")


def _replay_as_one_batch(db: Any, names: dict[str, str], events: Sequence[RecordedEvent], times: int) -> None:
    """Apply every event ``times`` times in a row to the ledger's projection, as one runner batch does."""
    projection = AccountsProjection()
    with db.transaction() as conn:
        session = Session(db, conn, names)
        projection.begin_batch(session, [e for e in events for _ in range(times)])
        for e in events:
            handler = AccountsProjection.handler_for(type(e.data))
            assert handler is not None
            for _ in range(times):
                handler(projection, session, e)
        projection.end_batch(session)


@pytest.fixture
def replay_as_one_batch() -> Callable[[Any, dict[str, str], Sequence[RecordedEvent], int], None]:
    """``replay_as_one_batch(db, names, events, times)``: the ledger projection, one batch."""
    return _replay_as_one_batch
