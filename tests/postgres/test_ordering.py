"""The global log under concurrent PostgreSQL transactions: never a skip, never a duplicate.

Long and idle transactions are held open deliberately on connections of their
own (``held``), running the store's own append statement, so the interleavings
that break a position-ordered log happen for certain instead of by luck.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import uuid

import pytest

from eventvault import ANY, NO_STREAM, Checkpoint, WrongExpectedVersion
from eventvault.store.records import START, RecordedEvent


class Progress:
    """Counts the short writers' commits, for the long writers to wait on (no sleeping)."""

    def __init__(self) -> None:
        self.commits = 0
        self.short_writers_done = False
        self._changed = asyncio.Condition()

    async def committed(self) -> None:
        async with self._changed:
            self.commits += 1
            self._changed.notify_all()

    async def finish(self) -> None:
        async with self._changed:
            self.short_writers_done = True
            self._changed.notify_all()

    async def wait_for_more(self, than: int) -> None:
        """Wait until the short writers committed more than ``than`` appends (or stopped)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.commits > than or self.short_writers_done)


async def follow(store, stop: asyncio.Event, expected: list[uuid.UUID]) -> list[RecordedEvent]:
    """Page through the log like a projection: small pages, waiting when caught up."""
    seen: list[RecordedEvent] = []
    checkpoint: str | None = None
    while True:
        page = await store.read_all(checkpoint, limit=5)
        assert checkpoint is None or page.checkpoint >= Checkpoint.parse(checkpoint)
        seen.extend(page)
        checkpoint = str(page.checkpoint)  # kept as text, as a projection stores it
        if page.events:
            continue
        if stop.is_set() and len(seen) >= len(expected):
            return seen
        await store.wait_for_events(checkpoint, timeout=0.5)


@pytest.mark.parametrize("cluster", ["quiet", "busy"])
async def test_eight_writers_with_long_and_short_transactions_and_two_followers(
    open_store, held, notes, cluster, busy_cluster
):
    """8 writers (4 with long transactions, some rolled back), 2 followers: each sees every event once.

    On a busy cluster other programs keep write transactions open and commit
    others, in another database and in the same one, while the writers race.
    """
    writer_store = await open_store(pool_max=8, poll_interval=0.05)
    readers = [await open_store(poll_interval=0.05) for _ in range(2)]
    progress = Progress()
    committed: list[uuid.UUID] = []
    rolled_back: list[uuid.UUID] = []
    stop = asyncio.Event()
    rng = random.Random(20240229)

    async def short_writer(w: int) -> None:
        for i in range(25):
            sent = notes(*(f"short w{w} #{i}.{k}" for k in range(rng.randint(1, 3))))
            await writer_store.append(f"short-{w}", sent, expected_version=ANY)
            committed.extend(e.event_id for e in sent)
            await progress.committed()

    async def long_writer(w: int) -> None:
        for i in range(6):
            # Half of the long transactions take their id first and insert late (low
            # tx, high positions); the others insert first and commit late (low
            # positions, committed after higher ones).
            take_xid_first = (w + i) % 2 == 0
            txn = await held(writer_store, take_xid=take_xid_first)
            mark = progress.commits
            if take_xid_first:
                await progress.wait_for_more(mark + 2)
            sent = notes(f"long w{w} #{i}.a", f"long w{w} #{i}.b")
            await txn.append(f"long-{w}", sent)
            await progress.wait_for_more(progress.commits + 2)
            if i % 3 == 2:
                await txn.rollback()
                rolled_back.extend(e.event_id for e in sent)
            else:
                await txn.commit()
                committed.extend(e.event_id for e in sent)

    async def write_all() -> None:
        short = asyncio.gather(*(short_writer(w) for w in range(4)))
        long = asyncio.gather(*(long_writer(w) for w in range(4)))
        await short
        await progress.finish()
        await long
        stop.set()

    others = busy_cluster() if cluster == "busy" else contextlib.nullcontext()
    async with asyncio.timeout(120), others:
        _, views = await asyncio.gather(
            write_all(), asyncio.gather(*(follow(r, stop, committed) for r in readers))
        )

    final = [e async for e in writer_store.iter_all()]
    assert sorted(e.event_id for e in final) == sorted(committed)
    assert len(committed) == len(set(committed))
    assert not set(rolled_back) & {e.event_id for e in final}
    for view in views:
        ids = [e.event_id for e in view]
        assert len(ids) == len(set(ids)), "a follower saw an event twice"
        assert sorted(ids) == sorted(committed), "a follower missed an event"
        assert [e.checkpoint for e in view] == [e.checkpoint for e in final]
    assert views[0] == views[1]
    assert all(a.checkpoint < b.checkpoint for a, b in itertools.pairwise(final))
    # The hazard really happened: in log order, positions go backwards somewhere,
    # so a follower ordered by position alone would have skipped those events.
    assert any(a.position > b.position for a, b in itertools.pairwise(final))


async def test_an_idle_in_transaction_writer_delays_readers_but_never_makes_them_skip(store, held, notes):
    """Events committed after an idle transaction's id stay unread until it ends, then all come, in order."""
    before = await store.append("before", notes("before"), expected_version=NO_STREAM)
    idle = await held()
    await idle.append("idle", notes("idle"))
    b = await store.append("later", notes("b"), expected_version=NO_STREAM)
    c = await store.append("later", notes("c"), expected_version=1)

    page = await store.read_all()
    assert [e.data.text for e in page] == ["before"]
    assert page.checkpoint == before.checkpoint
    assert await store.head() == before.checkpoint < b.checkpoint
    assert await store.wait_for_events(page.checkpoint, timeout=0.2) is False
    lag = await store.read_horizon_lag()
    assert lag.pending_events == 2  # b and c are committed, just not readable yet
    assert lag.oldest_xact_pid == idle.pid
    assert lag.oldest_xact_state == "idle in transaction"
    assert lag.oldest_xact_seconds is not None
    assert lag.oldest_xact_seconds >= 0

    await idle.commit()
    later = await store.read_all(page.checkpoint)
    assert [e.data.text for e in later] == ["idle", "b", "c"]
    assert later.checkpoint == c.checkpoint == await store.head()
    assert (await store.read_horizon_lag()).pending_events == 0


async def test_a_rolled_back_append_leaves_no_gap_that_stalls_readers(store, held, notes):
    """A rolled-back append's positions are simply missing: readers go on at once, and its ids stay free."""
    first = await store.append("s", notes("first"), expected_version=NO_STREAM)
    doomed_events = notes("doomed")
    doomed = await held(take_xid=False)
    lost = await doomed.append("s2", doomed_events)
    after = await store.append("s", notes("after"), expected_version=1)
    await doomed.rollback()

    assert await store.wait_for_events(first.checkpoint, timeout=10) is True
    page = await store.read_all(first.checkpoint)
    assert [e.data.text for e in page] == ["after"]
    assert lost.positions[0] < after.positions[0]  # the gap is behind the reader, not in its way
    assert await store.head() == after.checkpoint
    # The rolled-back append left no trace: its event ids can still be appended.
    again = await store.append("s2", doomed_events, expected_version=NO_STREAM)
    assert [e.event_id for e in await store.read_stream("s2")] == [doomed_events[0].event_id]
    assert again.checkpoint > after.checkpoint


async def test_a_filtered_page_never_moves_its_checkpoint_past_an_open_transaction(store, held, notes, flags):
    """A short filtered page advances only to the readable head, so a flag committed late is still found."""
    await store.append("noise", notes("n1", "n2"), expected_version=NO_STREAM)
    open_txn = await held()
    await open_txn.append("flags", flags("late flag"))
    await store.append("noise", notes("n3", "n4"), expected_version=2)

    empty = await store.read_all(event_types=["pg.Flagged"])
    assert list(empty) == []
    assert empty.checkpoint == await store.head()  # past n1 and n2, short of the open transaction
    assert empty.checkpoint.tx < open_txn.tx

    await open_txn.commit()
    found = await store.read_all(empty.checkpoint, event_types=["pg.Flagged"])
    assert [e.data.text for e in found] == ["late flag"]
    assert found.checkpoint == await store.head()  # and past n3, n4 after it
    assert list(await store.read_all(found.checkpoint, event_types=["pg.Flagged"])) == []


async def test_a_full_filtered_page_ends_at_its_last_event(store, notes, flags):
    """When a filtered page is full, its checkpoint is its last event's, not the head."""
    await store.append("mixed", [*flags("f1", "f2"), *notes("n1"), *flags("f3")], expected_version=NO_STREAM)
    page = await store.read_all(limit=2, event_types=["pg.Flagged"])
    assert [e.data.text for e in page] == ["f1", "f2"]
    assert page.checkpoint == page.events[-1].checkpoint
    rest = await store.read_all(page.checkpoint, limit=2, event_types=["pg.Flagged"])
    assert [e.data.text for e in rest] == ["f3"]


async def test_a_checkpoint_ahead_of_the_readable_log_is_kept(store, held, notes):
    """Reading after a checkpoint beyond the head returns nothing and keeps that checkpoint."""
    idle = await held()
    await idle.append("idle", notes("x"))
    ahead = await store.append("s", notes("y"), expected_version=NO_STREAM)
    page = await store.read_all(ahead.checkpoint, event_types=["pg.Noted"])
    assert list(page) == []
    assert page.checkpoint == ahead.checkpoint
    await idle.rollback()


async def test_appends_to_different_streams_do_not_wait_for_each_other(store, held, notes, raw, eventually):
    """An open transaction holding one stream blocks appends to that stream only."""
    await store.append("busy", notes("a"), expected_version=NO_STREAM)
    holder = await held()
    await holder.append("busy", notes("held"), expected_version=1)

    async with asyncio.timeout(10):  # would hang if writers were serialized
        other = await store.append("free", notes("b"), expected_version=NO_STREAM)
    assert other.stream_version == 1

    blocked = asyncio.create_task(store.append("busy", notes("c"), expected_version=1))
    watcher = await raw()

    async def waiting_on_locks() -> int:
        cur = await watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s",
            [holder.pid],
        )
        row = await cur.fetchone()
        return int(row[0])

    await eventually(waiting_on_locks, lambda n: n >= 1, what="the append to block on the stream lock")
    assert not blocked.done()
    await holder.commit()
    with pytest.raises(WrongExpectedVersion) as caught:
        await blocked
    assert (caught.value.expected, caught.value.actual) == (1, 2)


async def test_head_is_start_until_the_first_event_is_readable(store, held, notes):
    """head() never points at an event readers cannot read yet."""
    first = await held()
    await first.append("s", notes("a"))
    assert await store.head() == START
    await first.commit()
    assert await store.head() == first.result.checkpoint


async def test_a_page_of_the_log_is_an_index_range_scan(store, notes, raw):
    """EXPLAIN of the log queries shows the (tx_id, position) index, never a sequential scan of events."""
    for s in range(100):
        await store.append(
            f"stream-{s}", notes(*(f"{s}.{k}" for k in range(100))), expected_version=NO_STREAM
        )
    conn = await raw()
    await conn.execute(f"ANALYZE {store.schema}.events")
    middle = (await store.read_all(limit=5000)).checkpoint
    params = {"tx": str(middle.tx), "position": middle.position, "limit": 1000}

    plans = {}
    for name, query in [("page", store._sql.read_all), ("filtered", store._sql.read_all_filtered)]:
        cur = await conn.execute(b"EXPLAIN " + query, {**params, "types": ["pg.Noted"]})
        plans[name] = "\n".join(r[0] for r in await cur.fetchall())
    cur = await conn.execute(b"EXPLAIN " + store._sql.head)
    plans["head"] = "\n".join(r[0] for r in await cur.fetchall())

    for name, plan in plans.items():
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        assert "using events_log_order on events" in plan, f"{name}:\n{plan}"
    assert re.search(r"Index (Only )?Scan Backward using events_log_order", plans["head"]), plans["head"]
    assert 'Index Cond: ((ROW(tx_id, "position") > ROW(' in plans["page"], plans["page"]


async def test_category_reads_and_event_lookups_are_index_scans(store, notes, raw):
    """EXPLAIN of read_category, list_streams and get_event: an index of stream or event ids, no Seq Scan."""
    for s in range(100):
        await store.append(f"stream-{s}", notes(*(f"{s}.{k}" for k in range(50))), expected_version=NO_STREAM)
    for s in range(5):
        await store.append(f"acct-{s}", notes("a", "b"), expected_version=NO_STREAM)
    conn = await raw()
    await conn.execute(f"ANALYZE {store.schema}.events")
    await conn.execute(f"ANALYZE {store.schema}.streams")
    one = (await store.read_category("acct-")).events[0]

    statements = {
        "category": (
            store._sql.read_category,
            {"tx": "0", "position": 0, "limit": 1000, "lower": "acct-", "upper": "acct."},
        ),
        "list": (store._sql.list_streams, {"lower": "acct-", "upper": "acct.", "after": None, "limit": 100}),
        "get_event": (store._sql.get_event, [one.event_id]),
    }

    async def plans() -> dict[str, str]:
        found = {}
        for name, (query, params) in statements.items():
            cur = await conn.execute(b"EXPLAIN " + query, params)
            found[name] = "\n".join(r[0] for r in await cur.fetchall())
        return found

    chosen = await plans()
    for name, plan in chosen.items():
        assert "Seq Scan on events" not in plan, f"{name}:\n{plan}"
    assert "on events_stream_version" in chosen["category"], chosen["category"]
    assert "using events_event_id on events" in chosen["get_event"], chosen["get_event"]
    # A table of 105 streams is read whole rather than through an index; with
    # sequential scans priced out, the prefix is seen to be an index range.
    await conn.execute("SET enable_seqscan = off")
    forced = await plans()
    for name in ("category", "list"):
        assert "Seq Scan" not in forced[name], forced[name]
        assert "using streams_id_prefix on streams" in forced[name], forced[name]
        assert (
            "Index Cond: ((stream_id ~>=~ 'acct-'::text) AND (stream_id ~<~ 'acct.'::text))" in forced[name]
        )


async def test_category_reads_respect_the_read_horizon(store, held, notes):
    """read_category, get_event and list_streams show nothing an open event writer holds back."""
    blocker = await held()
    await blocker.append("acct-held", notes("held"))
    later = notes("b")
    await store.append("acct-later", later, expected_version=NO_STREAM)
    page = await store.read_category("acct-")
    assert list(page) == []
    assert page.checkpoint == START
    assert await store.get_event(later[0].event_id) is None
    assert await store.list_streams(prefix="acct-") == []
    await blocker.commit()
    page = await store.read_category("acct-")
    assert [e.stream_id for e in page] == ["acct-held", "acct-later"]
    assert [s.stream_id for s in await store.list_streams(prefix="acct-")] == ["acct-held", "acct-later"]


async def test_checkpoint_at_finds_a_readable_event_by_its_position(store, held, notes):
    """checkpoint_at(position) is the event's (tx, position), None while it is not readable or absent."""
    first = await store.append("s", notes("a"), expected_version=NO_STREAM)
    assert await store.checkpoint_at(first.positions[0]) == first.checkpoint
    assert await store.checkpoint_at(first.positions[0] + 1000) is None
    blocker = await held()
    await blocker.append("blocker", notes("held"))
    later = await store.append("s", notes("b"), expected_version=1)
    assert await store.checkpoint_at(later.positions[0]) is None  # committed, not readable yet
    await blocker.commit()
    assert await store.checkpoint_at(later.positions[0]) == later.checkpoint


async def test_the_read_horizon_reads_the_end_of_an_index_not_the_log(store, raw, schema, notes):
    """With nothing held back, read_horizon() costs a few index pages, whatever the log's size.

    Its statements run as generic plans after a few calls (plpgsql caches them),
    so the snapshot's xmin is a parameter the planner cannot see: a test written
    as "any event at or past the xmin" was planned as a scan of the events table,
    which finds nothing, and reads every page, on every read of the log.
    """
    await store.append("s", notes("first"), expected_version=NO_STREAM)
    conn = await raw()
    await conn.execute(
        f"INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, schema_version, "  # noqa: S608
        "occurred_us, recorded_us, data, metadata) "
        "SELECT gen_random_uuid(), 'bulk', g, 'pg.Noted', 1, 0, 0, '\\x7b7d', '\\x7b7d' "
        "FROM generate_series(1, 20000) AS g"
    )
    cur = await conn.execute(f"SELECT pg_relation_size('{schema}.events') / 8192")
    [(pages,)] = await cur.fetchall()
    assert pages > 150
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    for _ in range(3):  # the function compiled, its plans cached, the catalog's pages read
        await conn.execute(f"SELECT {schema}.read_horizon()")
    cur = await conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT {schema}.read_horizon()")
    [([plan],)] = await cur.fetchall()
    touched = plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
    assert touched < 20, (touched, pages)
