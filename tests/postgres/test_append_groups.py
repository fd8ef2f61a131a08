"""Appends that wait while ``append_concurrency`` others are in flight go together, in one transaction.

Each test holds a stream's row lock in a transaction of its own, so that one
append of the store stays in flight for as long as the test wants, and the
appends made meanwhile wait; releasing the lock lets them go as a group.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from eventvault import ANY, NO_STREAM
from eventvault.errors import DuplicateEventId, StoreClosed, WrongExpectedVersion
from eventvault.store.records import AppendResult


async def _until_waiting(store, count: int) -> None:
    """Let the test's own tasks run until ``count`` appends wait for a group (no timing involved)."""
    for _ in range(1000):
        if len(store._appends.waiting) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(store._appends.waiting)} appends wait, expected {count}")


@dataclass
class Blocked:
    """A store (append_concurrency=1) whose one append in flight waits on a lock the test holds."""

    store: Any
    holder: Any
    first: asyncio.Task[AppendResult]
    admin: Any
    app: str

    async def lock_waiters(self) -> list[int]:
        """The store's server processes waiting on a lock."""
        cur = await self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            [self.app],
        )
        return [r[0] for r in await cur.fetchall()]

    async def release(self) -> AppendResult:
        """Commit the holder; the append in flight finishes, the waiting ones go as a group."""
        await self.holder.commit()
        return await self.first


@pytest.fixture
async def blocked(open_store, held, raw, notes, eventually):
    app = f"evt-group-{uuid.uuid4().hex[:8]}"
    store = await open_store(application_name=app, append_concurrency=1, pool_max=4)
    await store.append("blocker", notes("made"), expected_version=NO_STREAM)
    holder = await held(store)
    await holder.append("blocker", notes("held"), expected_version=1)
    first = asyncio.create_task(store.append("blocker", notes("first"), expected_version=ANY))
    state = Blocked(store, holder, first, await raw(), app)
    await eventually(state.lock_waiters, lambda pids: len(pids) == 1, what="the first append to wait")
    yield state
    if not first.done():
        first.cancel()
        with contextlib.suppress(BaseException):
            await first


async def test_appends_waiting_behind_one_in_flight_commit_as_one_transaction(blocked, notes):
    """Waiting appends (new streams, one stream twice, several events at once) land in one transaction."""
    store = blocked.store
    tasks = [
        asyncio.create_task(store.append("a", notes("a1"), expected_version=NO_STREAM)),
        asyncio.create_task(store.append("twice", notes("t1"), expected_version=ANY)),
        asyncio.create_task(store.append("b", notes("b1", "b2", "b3"), expected_version=NO_STREAM)),
        asyncio.create_task(store.append("twice", notes("t2"), expected_version=ANY)),
    ]
    await _until_waiting(store, len(tasks))
    first = await blocked.release()
    a, t1, b, t2 = await asyncio.gather(*tasks)

    assert first.stream_version == 3
    assert {r.checkpoint.tx for r in (a, t1, b, t2)} == {a.checkpoint.tx}  # one transaction
    assert a.checkpoint.tx != first.checkpoint.tx
    assert (t1.stream_version, t2.stream_version) == (1, 2)  # in the order they were made
    assert b.stream_version == 3
    assert len(b.positions) == 3
    positions = [p for r in (a, t1, b, t2) for p in r.positions]
    assert len(set(positions)) == len(positions)
    assert [e.data.text for e in await store.read_stream("twice")] == ["t1", "t2"]
    assert [e.data.text for e in await store.read_stream("b")] == ["b1", "b2", "b3"]
    assert [e.data.text for e in await store.read_stream("blocker")] == ["made", "held", "first"]
    log = [e async for e in store.iter_all()]
    assert len(log) == 9
    assert [e.checkpoint for e in log] == sorted(e.checkpoint for e in log)


async def test_a_refused_append_fails_alone_and_the_rest_of_its_group_commits(blocked, notes):
    """A wrong expected version inside a group raises for that append only."""
    store = blocked.store
    d = asyncio.create_task(store.append("d", notes("d1"), expected_version=NO_STREAM))
    wrong = asyncio.create_task(store.append("blocker", notes("late"), expected_version=2))
    e = asyncio.create_task(store.append("e", notes("e1"), expected_version=NO_STREAM))
    await _until_waiting(store, 3)
    await blocked.release()
    with pytest.raises(WrongExpectedVersion):
        await wrong
    assert (await d).checkpoint.tx == (await e).checkpoint.tx
    assert [x.data.text for x in await store.read_stream("blocker")] == ["made", "held", "first"]
    assert [x.data.text for x in await store.read_stream("d")] == ["d1"]


async def test_an_error_rolls_the_group_back_and_each_append_runs_alone(blocked, open_store, notes):
    """An event id stored elsewhere fails its group; the others land, and a retry answers as before."""
    store = blocked.store
    stored = notes("stored")
    landed = await (await open_store()).append("f", stored, expected_version=NO_STREAM)
    tasks = [
        asyncio.create_task(store.append("g", notes("g1"), expected_version=NO_STREAM)),
        asyncio.create_task(store.append("elsewhere", stored, expected_version=ANY)),
        asyncio.create_task(store.append("f", stored, expected_version=NO_STREAM)),  # a retry
        asyncio.create_task(store.append("h", notes("h1"), expected_version=NO_STREAM)),
    ]
    await _until_waiting(store, len(tasks))
    await blocked.release()
    g, duplicate, retry, h = await asyncio.gather(*tasks, return_exceptions=True)

    assert isinstance(duplicate, DuplicateEventId)
    assert retry == landed
    assert isinstance(g, AppendResult)
    assert isinstance(h, AppendResult)
    assert g.checkpoint.tx != h.checkpoint.tx  # each ran alone, after the group rolled back
    assert [x.data.text for x in await store.read_stream("g")] == ["g1"]
    assert [x.data.text for x in await store.read_stream("h")] == ["h1"]
    assert [x.data.text for x in await store.read_stream("f")] == ["stored"]
    assert await store.stream_version("elsewhere") == 0


async def test_a_group_whose_connection_is_lost_runs_each_append_alone(
    blocked, open_store, held, raw, notes, eventually
):
    """The group's backend terminated mid-transaction: nothing of it stays, each append lands once."""
    store = blocked.store
    await (await open_store()).append("locked", notes("made"), expected_version=NO_STREAM)
    second = await held(store)
    await second.append("locked", notes("h2"), expected_version=1)
    x = asyncio.create_task(store.append("x", notes("x1"), expected_version=NO_STREAM))
    locked = asyncio.create_task(store.append("locked", notes("l1"), expected_version=ANY))
    await _until_waiting(store, 2)
    await blocked.release()
    [pid] = await eventually(blocked.lock_waiters, lambda pids: len(pids) == 1, what="the group to wait")
    admin = await raw()
    await admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])

    assert (await x).stream_version == 1
    # Alone, the append to "locked" waits on the lock again, on a connection of its own.
    await eventually(
        blocked.lock_waiters, lambda pids: len(pids) == 1 and pids != [pid], what="the retry to wait"
    )
    await second.commit()
    assert (await locked).stream_version == 3
    assert [e.data.text for e in await store.read_stream("x")] == ["x1"]
    assert [e.data.text for e in await store.read_stream("locked")] == ["made", "h2", "l1"]


async def test_an_append_cancelled_while_it_waits_is_not_made(blocked, notes):
    """Cancelled before its group is sent, an append writes nothing; its neighbours are unaffected."""
    store = blocked.store
    gone = asyncio.create_task(store.append("gone", notes("no"), expected_version=NO_STREAM))
    kept = asyncio.create_task(store.append("kept", notes("yes"), expected_version=NO_STREAM))
    await _until_waiting(store, 2)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    await blocked.release()
    assert (await kept).stream_version == 1
    assert await store.stream_version("gone") == 0


async def test_many_concurrent_writers_share_transactions(open_store, notes):
    """32 writers, one event per append: every append lands once, in fewer transactions than appends."""
    store = await open_store(pool_max=8)

    async def writer(i: int) -> list[AppendResult]:
        return [
            await store.append(f"w{i}", notes(f"{i}-{k}"), expected_version=k or NO_STREAM) for k in range(10)
        ]

    results = [r for rs in await asyncio.gather(*(writer(i) for i in range(32))) for r in rs]
    assert len(results) == 320
    assert len({r.checkpoint.tx for r in results}) < 320
    log = [e async for e in store.iter_all()]
    assert sorted(e.event_id for e in log) == sorted({e.event_id for e in log})
    assert len(log) == 320
    for i in range(32):
        assert [e.data.text for e in await store.read_stream(f"w{i}")] == [f"{i}-{k}" for k in range(10)]


async def test_closing_the_store_while_appends_wait_makes_none_of_them(blocked, open_store, notes):
    """Appends waiting for a group when the store closes raise StoreClosed; nothing of them lands."""
    store = blocked.store
    waiting = [
        asyncio.create_task(store.append(f"late{i}", notes("x"), expected_version=NO_STREAM))
        for i in range(3)
    ]
    await _until_waiting(store, 3)
    closing = asyncio.create_task(store.close())
    first = await blocked.release()
    await closing
    assert first.stream_version == 3
    for task in waiting:
        with pytest.raises(StoreClosed):
            await task
    reader = await open_store()
    assert [await reader.stream_version(f"late{i}") for i in range(3)] == [0, 0, 0]
    assert [e.data.text for e in await reader.read_stream("blocker")] == ["made", "held", "first"]
