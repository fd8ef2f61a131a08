"""The store's own connections: prepared appends, the spare connection, interrupted calls."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import psycopg
from psycopg import sql

from eventvault import ANY, NO_STREAM
from eventvault.store.postgres import PostgresEventStore
from eventvault.store.records import START, datetime_to_micros


async def _rows(conn: psycopg.AsyncConnection, schema: str, stream_id: str) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT stream_version, event_type, schema_version, occurred_us, data, metadata "
            "FROM {}.events WHERE stream_id = %s ORDER BY stream_version"
        ).format(sql.Identifier(schema)),
        [stream_id],
    )
    return await cur.fetchall()


async def test_the_stores_appends_write_what_append_on_writes(store, held, raw, notes):
    """One event and several, through the store's prepared statements and through append_on: the same rows."""
    stream = "konto-äöü-€ 'quoted' \"and\" \\back"
    mine = [*notes("one"), *notes("two", "three", "four")]
    theirs = [*notes("one"), *notes("two", "three", "four")]
    first = await store.append(stream, mine[:1], expected_version=NO_STREAM)
    second = await store.append(stream, mine[1:], expected_version=1)
    txn = await held()
    await txn.append("other", theirs[:1], expected_version=NO_STREAM)
    await txn.append("other", theirs[1:], expected_version=1)
    await txn.commit()

    assert first.stream_version == 1
    assert second.stream_version == 4
    assert len(second.positions) == 3
    assert list(second.positions) == sorted(second.positions)
    assert first.checkpoint < second.checkpoint
    conn = await raw()
    ours, via_append_on = await _rows(conn, store.schema, stream), await _rows(conn, store.schema, "other")
    assert [r[:3] + r[4:] for r in ours] == [r[:3] + r[4:] for r in via_append_on]
    read = await store.read_stream(stream)
    assert [e.event_id for e in read] == [e.event_id for e in mine]
    assert [e.data.text for e in read] == ["one", "two", "three", "four"]
    assert [e.position for e in read] == [*first.positions, *second.positions]
    assert read[-1].checkpoint == second.checkpoint


async def test_stream_reads_on_the_stores_connections_load_what_psycopgs_cursor_loads(store, raw, notes):
    """Each stream read (forwards, backwards, as of a time, limited): the same events as the cursor's rows."""
    stream = "konto-äöü-€ 'quoted'"
    first = await store.append(stream, notes("one"), expected_version=NO_STREAM)
    await store.append(stream, notes("two", "three", "four"), expected_version=1)
    conn = await raw()
    as_of = (await store.read_stream(stream))[0].recorded_at
    as_of_us = datetime_to_micros(as_of)
    cases = [
        (False, None, None, None),
        (True, None, None, None),
        (False, as_of_us, None, None),
        (True, as_of_us, 2, None),
        (False, None, 3, 2),
    ]
    for backwards, as_of_us_, to, limit in cases:
        query = store._sql.read_stream[backwards, as_of_us_ is not None]
        params = {
            "stream_id": stream,
            "from": 1,
            "to": to or 2**62,
            "as_of": as_of_us_,
            "limit": limit,
            "rules": True,
        }
        cur = await conn.execute(query, params, binary=True)
        expected = [r[:10] for r in await cur.fetchall()]
        kwargs = {"backwards": backwards, "limit": limit, "to_version": to}
        events = await store.read_stream(stream, **kwargs, **({"as_of": as_of} if as_of_us_ else {}))
        got = [
            (
                e.event_id,
                e.stream_id,
                e.stream_version,
                e.position,
                e.event_type,
                e.schema_version,
                e._occurred_us,
                e._recorded_us,
                e._payload,
                e._meta_raw,
            )
            for e in events
        ]
        assert got == expected, (backwards, as_of_us_, to, limit)
        assert got, "every case reads something"
    assert (await store.read_stream(stream, limit=1))[0].checkpoint == first.checkpoint


async def test_each_new_connection_prepares_the_appends_again(open_store, raw, notes):
    """A connection terminated under the store is replaced; the replacement prepares the statements anew."""
    app = f"evt-prep-{uuid.uuid4().hex[:8]}"
    store = await open_store(application_name=app, pool_min=1, pool_max=1)
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    await store.append("s", notes("b", "c"), expected_version=1)
    admin = await raw()
    cur = await admin.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE application_name = %s AND pid <> pg_backend_pid()",
        [app],
    )
    assert (await cur.fetchone())[0] >= 1
    await store.append("s", notes("d"), expected_version=3)
    await store.append("s", notes("e", "f"), expected_version=4)
    assert [e.data.text for e in await store.read_stream("s")] == ["a", "b", "c", "d", "e", "f"]
    # What the store kept about the terminated connection went with it.
    states = store._appends._prepared._states
    assert states
    assert not [conn for conn in states if conn.closed]


async def test_a_cancelled_append_is_cancelled_on_the_server_and_the_store_goes_on(
    open_store, held, raw, notes, eventually
):
    """Cancelling an append that waits on a lock cancels its statement; nothing of it lands."""
    app = f"evt-cancel-{uuid.uuid4().hex[:8]}"
    store = await open_store(application_name=app, pool_min=1, pool_max=1, pool_timeout=5)
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    holder = await held(store)
    await holder.append("s", notes("held"), expected_version=1)  # holds the stream's row lock
    admin = await raw()
    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
    )

    async def waiters() -> list[int]:
        cur = await admin.execute(waiting, [app])
        return [r[0] for r in await cur.fetchall()]

    task = asyncio.create_task(store.append("s", notes("cancelled"), expected_version=ANY))
    await eventually(waiters, lambda pids: len(pids) == 1, what="the append to wait on the lock")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    # The statement was cancelled on the server: nothing of this store waits any more.
    assert await waiters() == []
    await holder.commit()
    # The only connection (pool_max=1) is usable at once.
    third = await store.append("s", notes("c"), expected_version=2)
    assert third.stream_version == 3
    assert [e.data.text for e in await store.read_stream("s")] == ["a", "held", "c"]


async def test_one_connection_serves_concurrent_calls_and_notifications(
    open_store, notes, eventually, start_waiting
):
    """With pool_max=1 the connection kept aside between calls is handed on: no call times out."""
    reader = await open_store(poll_interval=60)
    writer = await open_store(pool_min=1, pool_max=1, pool_timeout=5)
    await reader._prepare_wait()  # starts the LISTEN connection
    await eventually(lambda: _listening(reader), bool, what="the reader to listen")

    results = await asyncio.gather(
        *(writer.append(f"s{i}", notes(f"{i}"), expected_version=NO_STREAM) for i in range(8)),
        *(writer.stream_version(f"s{i}") for i in range(8)),
    )
    assert [r.stream_version for r in results[:8]] == [1] * 8

    # A one-minute poll: once the reader has looked at the head, only the
    # writer's notification, sent over the same one connection between its
    # appends, can end the wait within 20 seconds.
    read_head = reader.head
    waiting = await start_waiting(reader, after=await read_head())
    last = None
    for i in range(20):
        last = await writer.append("steady", notes(f"{i}"), expected_version=ANY)
    async with asyncio.timeout(20):
        assert await waiting is True
    assert last is not None
    assert await read_head() >= last.checkpoint > START


async def _listening(store: PostgresEventStore) -> bool:
    return store._live.listening
