"""Live reads: LISTEN/NOTIFY is a debounced wake-up hint, and a timed poll stands behind it."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from eventvault import NO_STREAM, InvalidCheckpoint, InvalidInput, StoreClosed
from eventvault.store.postgres import PostgresEventStore
from eventvault.store.records import START


async def listening(store, eventually):
    """Start the store's listener and wait until its LISTEN is in place."""
    assert await store.wait_for_events(START, timeout=0) is False
    await eventually(lambda: _is_listening(store), bool, what="the listener to LISTEN")


async def _is_listening(store: PostgresEventStore) -> bool:
    return store._live.listening


async def test_a_notification_wakes_a_waiting_reader_long_before_its_poll(
    open_store, notes, eventually, start_waiting
):
    """With a one-minute poll, only the append's notification can end the wait within 20 seconds."""
    reader = await open_store(poll_interval=60)
    writer = await open_store()
    await listening(reader, eventually)
    waiting = await start_waiting(reader)
    result = await writer.append("s", notes("a"), expected_version=NO_STREAM)
    async with asyncio.timeout(20):
        assert await waiting is True
    assert await reader.head() == result.checkpoint


async def test_without_notifications_a_reader_is_only_delayed_by_its_poll(open_store, notes, start_waiting):
    """With notifications off on both sides, the timed poll alone finds a new event."""
    reader = await open_store(notify=False, poll_interval=0.05)
    writer = await open_store(notify=False)
    waiting = await start_waiting(reader)
    await writer.append("s", notes("a"), expected_version=NO_STREAM)
    async with asyncio.timeout(20):
        assert await waiting is True
    assert reader._live._listener is None  # it never listened: the poll did it


async def test_an_append_through_the_store_wakes_its_own_waiters_at_once(open_store, notes, start_waiting):
    """With notifications off and an hour-long poll, a local append still ends a local wait."""
    store = await open_store(notify=False)
    store.poll_interval = 3600  # as for every store: the attribute is the poll
    waiting = await start_waiting(store)
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    async with asyncio.timeout(20):
        assert await waiting is True


async def test_a_horizon_moved_by_a_silent_commit_is_found_by_the_poll(store, held, notes, eventually):
    """A notification spent while an older transaction holds the head; the poll finds that commit."""
    await listening(store, eventually)
    silent = await held()
    await silent.append("silent", notes("held"))  # append_on sends no notification
    start_wakes = store._live.wakes
    appended = await store.append("loud", notes("loud"), expected_version=NO_STREAM)  # notifies
    waiting = asyncio.create_task(store.wait_for_events(START, timeout=30))
    await eventually(lambda: _wakes(store), lambda n: n > start_wakes, what="the notification")
    assert await store.head() < appended.checkpoint  # woken, but the silent transaction holds the head
    await silent.commit()
    assert await waiting is True
    assert await store.head() == appended.checkpoint


async def _wakes(store: PostgresEventStore) -> int:
    return store._live.wakes


async def test_a_burst_of_notifications_wakes_readers_once(open_store, raw, eventually):
    """Twenty notifications inside the debounce window make one wake-up."""
    store = await open_store(notify_debounce=0.5)
    await listening(store, eventually)
    before = store._live.wakes
    woken = store._wake_event()
    conn = await raw()
    # Distinct payloads, so PostgreSQL delivers all twenty (it folds identical ones).
    await conn.execute("; ".join(f"NOTIFY \"{store.channel}\", '{i}'" for i in range(20)))
    async with asyncio.timeout(10):
        await woken.wait()
    assert store._live.wakes == before + 1


async def test_the_listener_reconnects_after_its_connection_is_killed(
    open_store, notes, raw, eventually, start_waiting
):
    """A terminated LISTEN connection is replaced, and notifications wake readers again (poll: a minute)."""
    app = f"evt-listener-{uuid.uuid4().hex[:8]}"
    reader = await open_store(poll_interval=60, application_name=app)
    writer = await open_store()
    await listening(reader, eventually)
    admin = await raw()
    await admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE application_name = %s AND query LIKE 'LISTEN%%'",
        [app],
    )

    async def listeners() -> int:
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'LISTEN%%'",
            [app],
        )
        row = await cur.fetchone()
        return int(row[0])

    await eventually(listeners, lambda n: n == 1, what="a new LISTEN connection")
    await eventually(lambda: _is_listening(reader), bool, what="the listener to be back")
    waiting = await start_waiting(reader)
    await writer.append("s", notes("a"), expected_version=NO_STREAM)
    async with asyncio.timeout(20):
        assert await waiting is True


async def test_waiting_times_out_with_false_when_nothing_is_appended(store, notes):
    """With nothing new, wait_for_events returns False once the timeout has passed."""
    head = (await store.append("s", notes("a"), expected_version=NO_STREAM)).checkpoint
    assert await store.wait_for_events(head, timeout=0.1) is False
    assert await store.wait_for_events(START, timeout=0) is True  # already past: no waiting


@pytest.mark.parametrize("bad", [-1, "1", None, True, float("nan")])
async def test_a_bad_timeout_is_refused(store, bad):
    """wait_for_events takes a number of seconds >= 0, nothing else."""
    with pytest.raises(InvalidInput, match="timeout"):
        await store.wait_for_events(START, timeout=bad)


async def test_a_bad_checkpoint_is_refused(store):
    """wait_for_events parses its checkpoint like read_all does."""
    with pytest.raises(InvalidCheckpoint):
        await store.wait_for_events("not a checkpoint", timeout=0)


async def test_waiting_on_a_closed_store_raises_store_closed(open_store):
    """A closed store refuses to wait."""
    store = await open_store()
    await store.close()
    with pytest.raises(StoreClosed):
        await store.wait_for_events(START, timeout=0)
