"""PostgreSQL specifics of appending: conflicts that end nothing else, racing retries, one time per append."""

from __future__ import annotations

import asyncio

import pytest

from eventvault import ANY, NO_STREAM, DuplicateEventId, WrongExpectedVersion


async def test_a_conflict_inside_a_callers_transaction_leaves_it_usable(store, held, notes):
    """In an explicit transaction, a conflicting append fails alone; the transaction goes on."""
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    txn = await held()
    with pytest.raises(WrongExpectedVersion):
        await txn.append("s", notes("late"), expected_version=0)
    sent = notes("b")
    await txn.append("s", sent, expected_version=1)
    with pytest.raises(DuplicateEventId):
        await txn.append("elsewhere", sent, expected_version=NO_STREAM)
    again = await txn.append("s", sent, expected_version=1)  # a retry inside the transaction
    await txn.commit()
    assert again == txn.result
    assert [e.data.text for e in await store.read_stream("s")] == ["a", "b"]
    assert await store.stream_version("elsewhere") == 0


async def test_the_same_append_sent_twice_at_once_lands_once(open_store, notes):
    """Two stores racing to append the same event ids to the same place both succeed, with one result."""
    left, right = await open_store(), await open_store()
    await left.append("s", notes("a"), expected_version=NO_STREAM)
    sent = notes("b", "c")
    barrier = asyncio.Barrier(2)

    async def send(store):
        await barrier.wait()
        return await store.append("s", sent, expected_version=1)

    one, other = await asyncio.gather(send(left), send(right))
    assert one == other
    assert [e.data.text for e in await left.read_stream("s")] == ["a", "b", "c"]


async def test_any_racing_on_a_new_stream_numbers_every_event(open_store, notes):
    """Many ANY appends creating the same stream at once all land, at versions 1..n."""
    stores = [await open_store() for _ in range(4)]
    barrier = asyncio.Barrier(16)

    async def send(i):
        await barrier.wait()
        return await stores[i % 4].append("fresh", notes(f"{i}"), expected_version=ANY)

    results = await asyncio.gather(*(send(i) for i in range(16)))
    assert sorted(r.stream_version for r in results) == list(range(1, 17))
    assert [e.stream_version for e in await stores[0].read_stream("fresh")] == list(range(1, 17))


async def test_all_events_of_an_append_share_one_recorded_time(store, notes):
    """One append has one recorded_at, so a temporal read never shows half of it."""
    await store.append("s", notes("a", "b", "c"), expected_version=NO_STREAM)
    await store.append("s", notes("d"), expected_version=3)
    read = await store.read_stream("s")
    assert len({e.recorded_at for e in read[:3]}) == 1
    assert read[3].recorded_at >= read[0].recorded_at
    assert [e.data.text for e in await store.read_stream("s", as_of=read[0].recorded_at)][:3] == [
        "a",
        "b",
        "c",
    ]
