"""wait_for_events: an append through the store wakes its waiters at once; a timeout is an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventvault import NO_STREAM, EventRegistry, EventStore, InvalidInput, open_store

reg = EventRegistry()


@reg.register
@dataclass(frozen=True)
class Tick:
    n: int


@reg.register
@dataclass(frozen=True)
class Tock:
    n: int


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'w.db'}"
    async with open_store(url, registry=reg) as s:
        s.poll_interval = 3600  # a wake-up, not the poll, must end the wait
        yield s


async def test_returns_at_once_when_events_are_there(store: EventStore) -> None:
    """Events already after the checkpoint: no waiting."""
    await store.append("t-1", [Tick(1)], expected_version=NO_STREAM)
    assert await store.wait_for_events(None, timeout=0)


async def test_times_out_with_false(store: EventStore) -> None:
    """Nothing new within the timeout: False."""
    head = await store.append("t-1", [Tick(1)], expected_version=NO_STREAM)
    assert not await store.wait_for_events(head.checkpoint, timeout=0.01)


async def test_an_append_wakes_a_waiter(store: EventStore) -> None:
    """A waiter blocked on the head wakes when another task appends (poll interval is an hour)."""
    head = await store.append("t-1", [Tick(1)], expected_version=NO_STREAM)
    waiter = asyncio.create_task(store.wait_for_events(head.checkpoint, timeout=30))
    await asyncio.sleep(0)  # let the waiter start waiting (ordering only, not timing)
    assert not waiter.done()
    await store.append("t-1", [Tick(2)], expected_version=1)
    assert await asyncio.wait_for(waiter, timeout=60)


@pytest.mark.parametrize("timeout", [-1, "1", None, True])
async def test_bad_timeouts_are_refused(store: EventStore, timeout: object) -> None:
    """The timeout is a number of seconds >= 0."""
    with pytest.raises(InvalidInput):
        await store.wait_for_events(None, timeout=timeout)  # type: ignore[arg-type]


async def _turns(n: int = 3) -> None:
    """Let the tasks woken so far run (ordering only, not timing)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_wait_for_types_returns_at_once_only_for_events_of_them(store: EventStore) -> None:
    """Events of the types after the checkpoint: at once; of other types only: it waits."""
    first = await store.append("t-1", [Tick(1)], expected_version=NO_STREAM)
    await store.append("t-1", [Tock(2)], expected_version=1)
    assert store.wakes_by_type
    assert await store.wait_for_events(None, timeout=0, event_types=["Tick"])
    assert await store.wait_for_events(None, timeout=0, event_types=["Tock"])
    assert not await store.wait_for_events(first.checkpoint, timeout=0.01, event_types=["Tick"])
    assert await store.wait_for_events(first.checkpoint, timeout=0, event_types=["Tick", "Tock"])


async def test_an_append_of_other_types_does_not_end_a_wait_for_types(store: EventStore) -> None:
    """A Tock wakes the waiters for any event, not those for Ticks; a Tick then wakes them."""
    head = await store.append("t-1", [Tick(1)], expected_version=NO_STREAM)
    ticks = asyncio.create_task(store.wait_for_events(head.checkpoint, timeout=30, event_types=["Tick"]))
    both = asyncio.create_task(
        store.wait_for_events(head.checkpoint, timeout=30, event_types=["Tock", "Tick"])
    )
    anything = asyncio.create_task(store.wait_for_events(head.checkpoint, timeout=30))
    await _turns()
    assert not ticks.done()
    assert not both.done()
    assert not anything.done()
    await store.append("t-1", [Tock(2)], expected_version=1)
    assert await asyncio.wait_for(anything, timeout=60)  # the wake-up of the Tock has run
    assert await asyncio.wait_for(both, timeout=60)
    await _turns()
    assert not ticks.done()
    await store.append("t-1", [Tick(3)], expected_version=2)
    assert await asyncio.wait_for(ticks, timeout=60)
    assert not store._typed_waiters  # the waiters that ended left nothing behind


async def test_a_wait_for_types_that_times_out_leaves_nothing_behind(store: EventStore) -> None:
    """Each turn of a typed wait registers a waiter; a timeout takes it back."""
    head = await store.append("t-1", [Tick(1)], expected_version=NO_STREAM)
    assert not await store.wait_for_events(head.checkpoint, timeout=0.01, event_types=["Tock"])
    assert not store._typed_waiters


@pytest.mark.parametrize("types", ["Tick", [], [""], [1]])
async def test_bad_event_types_are_refused(store: EventStore, types: object) -> None:
    """event_types is a non-empty collection of type names, as read_all takes it."""
    with pytest.raises(InvalidInput):
        await store.wait_for_events(None, timeout=0, event_types=types)  # type: ignore[arg-type]
