"""DCB on PostgreSQL: conditions see events that commit out of position order, and use the tag index."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus

from eventvault import NO_STREAM, NewEvent
from eventvault.errors import AppendConditionFailed, DuplicateEventId, InvalidEvent, StoreError
from eventvault.store.postgres import PostgresEventStore
from eventvault.store.postgres._dcb import _params, condition_sql
from eventvault.store.postgres._libpq import Prepared, statement
from eventvault.store.records import AppendCondition, AppendResult, Query

pytestmark = pytest.mark.asyncio


async def test_a_condition_fails_on_an_unseen_event_with_a_lower_position(store, held, notes) -> None:
    """An event a read could not see (its writer still ran) fails the condition, at a lower position.

    The earlier transaction commits an event at a higher position; the later one,
    still running at the read, holds a lower position. The read's head is the
    higher position; the condition after it must still find the lower one.
    """
    early = await held(store)
    late = await held(store)
    pending = await late.append("late", notes("pending"))
    readable = await early.append("early", notes("readable"))
    assert pending.position < readable.position
    assert early.tx < late.tx
    await early.commit()
    query = Query.of(types=["pg.Noted"])
    seen = await store.read(query)
    assert [e.position for e in seen.events] == [readable.position]
    assert seen.head == readable.position
    await late.commit()
    with pytest.raises(AppendConditionFailed) as failed:
        await store.append_events(notes("decided"), condition=AppendCondition(query, after=seen.head))
    assert failed.value.position == pending.position
    again = await store.read(query)
    assert [e.position for e in again.events] == [readable.position, pending.position]


async def test_a_read_waits_for_an_older_writer_holding_back_a_committed_match(
    store, held, notes, monkeypatch
) -> None:
    """A decision rests on every event committed before its read, not only on those below the horizon.

    An older event writer (a lower transaction id, still running) holds back the
    horizon; a tagged event that committed after it is acknowledged, so a
    decision read now must see it: the read waits until that writer ends, then
    answers with the event. Without the wait it would answer without it (and a
    rule such as "at most three open accounts" would refuse on a stale count).
    """
    dcb = store._dcb
    read_once = dcb._read_once
    reads = asyncio.Queue[bool]()

    async def counted(*args: Any) -> Any:
        rows = await read_once(*args)
        reads.put_nowait(rows[0][2] is not None)
        return rows

    monkeypatch.setattr(dcb, "_read_once", counted)
    older = await held(store)  # holds the writers' lock and a transaction id
    landed = await store.append_events([NewEvent(notes("taken")[0].data, tags=["seat:7"])])
    assert landed.checkpoint.tx > (older.tx or 0)
    reading = asyncio.create_task(store.read(Query.of(tags=["seat:7"])))
    assert await asyncio.wait_for(reads.get(), 60) is True  # held back: the read goes on
    assert await asyncio.wait_for(reads.get(), 60) is True
    assert not reading.done()
    await older.rollback()
    seen = await asyncio.wait_for(reading, 60)
    assert [e.position for e in seen.events] == [landed.position]
    assert seen.head == landed.position


async def test_a_tag_condition_is_a_range_probe_of_the_tag_index(store, raw, schema, notes) -> None:
    """EXPLAIN of a tag condition over 50,000 tag rows: a probe of event_tags' primary key, no scan."""
    await store.append_events([NewEvent(notes("x")[0].data, tags=["seat:1"])])
    conn = await raw()
    s = sql.Identifier(schema)
    await conn.execute(
        sql.SQL(
            "INSERT INTO {}.event_tags (tag, tx_id, position) "
            "SELECT 'seat:' || (g % 5000), '1'::xid8, g + 1000 FROM generate_series(1, 50000) AS g"
        ).format(s)
    )
    await conn.execute(sql.SQL("ANALYZE {}.event_tags").format(s))
    await conn.execute(sql.SQL("ANALYZE {}.events").format(s))
    query = Query.of(tags=["seat:1"], types=["pg.Noted"])
    cur = await conn.execute(sql.SQL("EXPLAIN ") + condition_sql(s, query), _params(query, 1))
    plan = "\n".join(r[0] for r in await cur.fetchall())
    assert "event_tags_pkey" in plan, plan
    assert "Seq Scan on event_tags" not in plan, plan


async def test_racing_conditions_on_a_type_one_wins_with_stream_appends_beside(
    open_store, notes, flags
) -> None:
    """Appenders conditioned on an event type (the writers' lock, exclusive) race with plain stream appends.

    Exactly one conditional append wins, every stream append of another type
    lands, and nothing deadlocks (a deadlock would surface as a StoreError).
    """
    stores: list[PostgresEventStore] = [await open_store(pool_max=4) for _ in range(3)]
    query = Query.of(types=["pg.Flagged"])
    seen = await stores[0].read(query)
    barrier = asyncio.Barrier(12)

    async def conditional(i: int) -> AppendResult | AppendConditionFailed:
        await barrier.wait()
        try:
            return await stores[i % 3].append_events(
                [NewEvent(flags(f"c{i}")[0].data, tags=[f"c:{i}"])],
                condition=AppendCondition(query, after=seen.head),
            )
        except AppendConditionFailed as lost:
            return lost

    async def plain(i: int) -> AppendResult:
        await barrier.wait()
        return await stores[i % 3].append(f"plain-{i}", notes(f"p{i}"), expected_version=NO_STREAM)

    outcomes = await asyncio.gather(*(conditional(i) for i in range(6)), *(plain(i) for i in range(6)))
    won = [r for r in outcomes[:6] if isinstance(r, AppendResult)]
    assert len(won) == 1, outcomes[:6]
    assert all(isinstance(r, AppendResult) for r in outcomes[6:])
    assert len((await stores[0].read(Query.all())).events) == 7


async def test_append_on_refuses_tagged_events_and_writes_nothing(store, raw, notes) -> None:
    """append_on runs the plain statement, which writes no tags: tagged events are refused, not stripped."""
    conn = await raw()
    tagged = [NewEvent(notes("x")[0].data, tags=["seat:1"])]
    with pytest.raises(InvalidEvent, match="does not write tags"):
        await store.append_on(conn, "s", store.prepare(tagged), NO_STREAM)
    assert (await store.read(Query.all())).events == []


def _stale_first_look(store: PostgresEventStore, monkeypatch, *, rounds: int) -> list[int]:
    """Make the delete's look at its stream's tags before their locks find none, ``rounds`` times.

    As if an append had brought the tags between that look and the row's lock:
    the look under the row's lock then finds tags the delete did not lock.
    """
    deletes = store._deletes
    looks = deletes._stored_tags
    calls: list[int] = []

    async def look(cur: Any, stream_id: str) -> list[str]:
        calls.append(len(calls))
        found = await looks(cur, stream_id)
        return [] if len(calls) % 2 == 1 and len(calls) <= 2 * rounds else found

    monkeypatch.setattr(deletes, "_stored_tags", look)
    return calls


async def test_a_delete_whose_stream_gained_tags_meanwhile_starts_again(store, notes, monkeypatch) -> None:
    """Tags found under the row's lock that the delete did not lock: it rolls back and starts again."""
    await store.append("seat-1", [NewEvent(notes("a")[0].data, tags=["seat:1"])], expected_version=NO_STREAM)
    calls = _stale_first_look(store, monkeypatch, rounds=1)
    deleted = await store.delete_stream("seat-1", expected_version=1)
    assert deleted is not None
    assert len(calls) == 4  # two rounds, each looking twice
    [marker] = (await store.read(Query.of(types=["$StreamDeleted"], tags=["seat:1"]))).events
    assert (marker.position, marker.tags) == (deleted.positions[0], ("seat:1",))
    assert await store.stream_version("seat-1") == 0


async def test_a_delete_whose_stream_keeps_gaining_tags_gives_up(store, notes, monkeypatch) -> None:
    """Five rounds, each finding tags it did not lock: StoreError, and the stream is not deleted."""
    await store.append("seat-1", [NewEvent(notes("a")[0].data, tags=["seat:1"])], expected_version=NO_STREAM)
    _stale_first_look(store, monkeypatch, rounds=5)
    with pytest.raises(StoreError, match="new tags 5 times"):
        await store.delete_stream("seat-1", expected_version=1)
    assert await store.stream_version("seat-1") == 1
    assert (await store.read(Query.of(types=["$StreamDeleted"]))).events == []


async def test_libpqs_transaction_is_read_committed_and_rolled_back_whole_at_an_error(
    store, raw, schema
) -> None:
    """The conditional append's transaction as ``_libpq`` sends it: one pipeline, all or nothing.

    Whatever the session's default isolation, it runs READ COMMITTED (each
    statement a fresh snapshot, which the check after the locks relies on). A
    statement that fails rolls back the ones before it, and leaves the
    connection idle for the next call.
    """
    conn = await raw()
    await conn.execute("SET default_transaction_isolation = serializable")
    await conn.execute(sql.SQL("CREATE TABLE {}.kept (k int PRIMARY KEY)").format(sql.Identifier(schema)))
    prepared = Prepared()
    isolation = statement("t_isolation", b"SELECT current_setting('transaction_isolation')", (), ())
    insert = statement(
        f"t_insert_{schema}",
        f"INSERT INTO {schema}.kept VALUES (%(k)s) RETURNING k".encode(),  # noqa: S608
        ("k",),
        (0,),
    )
    assert await prepared.transaction(conn, [(insert, {"k": 1}), (isolation, {})], tuple) == [
        ("read committed",)
    ]
    with pytest.raises(psycopg.errors.UniqueViolation):
        await prepared.transaction(conn, [(insert, {"k": 2}), (insert, {"k": 1}), (isolation, {})], tuple)
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert await prepared.transaction(conn, [(insert, {"k": 3})], tuple) == [(3,)]
    cur = await conn.execute(sql.SQL("SELECT k FROM {}.kept ORDER BY k").format(sql.Identifier(schema)))
    assert await cur.fetchall() == [(1,), (3,)]


async def test_a_conditional_append_of_a_stored_event_id_fails_and_the_connection_goes_on(
    open_store, notes
) -> None:
    """An event id stored elsewhere fails the conditional append inside its transaction: DuplicateEventId.

    On the store's one connection, the next conditional append then goes
    through, and nothing of the failed one was written.
    """
    store = await open_store(pool_min=1, pool_max=1)
    stored = await store.append("s", notes("first"), expected_version=NO_STREAM)
    [first] = await store.read_stream("s")
    query = Query.of(tags=["seat:1"])
    again = NewEvent(first.data, tags=["seat:1"], event_id=first.event_id)
    with pytest.raises(DuplicateEventId):
        await store.append_events([again], condition=AppendCondition(query, after=stored.position))
    seen = await store.read(query)
    assert seen.events == []
    done = await store.append_events(
        [NewEvent(first.data, tags=["seat:1"])], condition=AppendCondition(query, after=seen.head)
    )
    assert [e.position for e in (await store.read(query)).events] == list(done.positions)
