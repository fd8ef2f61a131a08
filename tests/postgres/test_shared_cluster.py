"""A cluster shared with other programs: transactions that write no events hold no reader back.

The read horizon is the oldest running transaction that may write events (one
that holds the schema's writers' lock), not the oldest in the whole cluster: a
write transaction left open in another database, or on another table of the
same database, must not delay ``read_all``, waits or projections.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import uuid
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import pq, sql

from eventvault import ANY, NO_STREAM, EventRegistry, NewEvent, StoreError, event
from eventvault.projections import Projection, ProjectionRunner, Session, handles
from eventvault.projections._db import PostgresReadModels
from eventvault.store.records import START, RecordedEvent
from eventvault_ledger.api.metrics import Metrics

log = logging.getLogger(__name__)

REGISTRY = EventRegistry()
WAIT = 30.0  # generous bound: every wait returns as soon as its condition holds
APPENDS = 200


@event("shared.Ticked", registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Ticked:
    """One numbered event."""

    n: int


class Ticks(Projection):
    """Records the number of every event it applies."""

    name = "ticks"
    tables = ("ticks",)
    schema = ("CREATE TABLE {ticks} (n INTEGER PRIMARY KEY)",)

    @handles(Ticked)
    def _ticked(self, db: Session, e: RecordedEvent) -> None:
        db.execute("INSERT INTO {ticks} (n) VALUES (?) ON CONFLICT (n) DO NOTHING", (e.data.n,))


@pytest.fixture
async def store(open_store):
    """A store that knows Ticked, polling seldom: only its wake-ups make waits short."""
    return await open_store(registry=REGISTRY, poll_interval=1.0)


async def _plain_horizon(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


@pytest.mark.parametrize("where", ["another database", "same database"])
async def test_a_transaction_that_writes_no_events_holds_no_reader_back(
    where, store, unrelated_transaction, raw, pg_url, schema
):
    """While it stays open, each new append is read by read_all and applied by a running projection."""
    blocker, blocker_xid = await unrelated_transaction(where)
    observer = await raw()
    loop = asyncio.get_running_loop()
    read_ms: list[float] = []
    applied_ms: list[float] = []
    db = PostgresReadModels(pg_url, schema=schema)
    try:
        async with ProjectionRunner(store, [Ticks()], read_models=db, idle_wait=1.0) as runner:
            checkpoint = START
            for n in range(APPENDS):
                started = loop.time()
                result = await store.append(f"tick-{n % 10}", [NewEvent(Ticked(n))], expected_version=ANY)
                async with asyncio.timeout(WAIT):
                    seen: list[int] = []
                    while n not in seen:
                        page = await store.read_all(checkpoint)
                        seen.extend(e.data.n for e in page)
                        checkpoint = page.checkpoint
                        if n not in seen:
                            await store.wait_for_events(checkpoint, timeout=WAIT)
                read_ms.append((loop.time() - started) * 1000)
                assert await runner.wait_for(result.checkpoint, timeout=WAIT)
                applied_ms.append((loop.time() - started) * 1000)
            # The blocker was open the whole time, and the plain horizon stayed behind it.
            assert blocker.info.transaction_status == pq.TransactionStatus.INTRANS
            assert await _plain_horizon(observer) <= blocker_xid
            applied = db.query("SELECT count(*) FROM ticks")
            assert applied == [(APPENDS,)]
            lag = await store.read_horizon_lag()
            assert lag.pending_events == 0
            assert lag.oldest_xact_pid is None
    finally:
        db.close()
    log.info(
        "%s: read p50 %.1f ms p99 %.1f ms; applied p50 %.1f ms p99 %.1f ms (%d appends)",
        where,
        _p(read_ms, 50),
        _p(read_ms, 99),
        _p(applied_ms, 50),
        _p(applied_ms, 99),
        APPENDS,
    )


async def test_an_event_writer_holding_the_horizon_is_named_not_the_unrelated_one(
    store, unrelated_transaction, held, pg_url, schema
):
    """With an unrelated transaction open and an event writer idle, the lag names the writer.

    The store, the projections' status and the service's metrics all say so.
    """
    db_of_test = PostgresReadModels(pg_url, schema=schema)
    await unrelated_transaction("same database")
    first = await store.append("first", [NewEvent(Ticked(1))], expected_version=NO_STREAM)
    idle = await held()
    await idle.append("idle", [NewEvent(Ticked(2))])
    await store.append("later", [NewEvent(Ticked(3))], expected_version=NO_STREAM)

    assert await store.head() == first.checkpoint  # the writer holds the horizon back
    lag = await store.read_horizon_lag()
    assert lag.pending_events == 1
    assert lag.oldest_xact_pid == idle.pid
    assert lag.oldest_xact_state == "idle in transaction"
    assert lag.oldest_xact_started is not None
    assert lag.oldest_xact_seconds is not None
    assert lag.oldest_xact_seconds >= 0

    # The projections' status and the service's metrics say the same.
    async with ProjectionRunner(store, [Ticks()], read_models=db_of_test) as runner:
        statuses = await runner.status()
        held = [s.held_back for s in statuses]
        assert [(h.pending_events, h.oldest_xact_pid, h.oldest_xact_started) for h in held if h] == [
            (1, idle.pid, lag.oldest_xact_started)
        ]
        metrics = Metrics()
        metrics.projections(statuses)
        gauges = dict(
            line.split()
            for line in metrics.render().decode().splitlines()
            if line.startswith("eventvault_store_")
        )
        assert float(gauges["eventvault_store_pending_events"]) == 1
        assert float(gauges["eventvault_store_horizon_holder_seconds"]) > 0

        await idle.commit()
        assert [e.data.n for e in await store.read_all(first.checkpoint)] == [2, 3]
        assert (await store.read_horizon_lag()).pending_events == 0
        assert [s.held_back for s in await runner.status()] == [None]


async def test_a_transaction_that_wrote_before_declaring_itself_a_writer_may_not_append(
    store, raw, new_schema
):
    """append_on refuses it (readers may be past its id) and writes nothing; declared first, it may."""
    conn = await raw()
    table = sql.Identifier(new_schema())
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(table))
    await conn.execute(sql.SQL("CREATE TABLE {}.orders (id uuid)").format(table))

    await conn.execute("BEGIN")
    await conn.execute(sql.SQL("INSERT INTO {}.orders VALUES (%s)").format(table), [uuid.uuid4()])
    with pytest.raises(StoreError, match=r"wrote before it was declared an event writer.*declare_writer"):
        await store.append_on(conn, "order-1", store.prepare([NewEvent(Ticked(1))]), NO_STREAM)
    await conn.execute("ROLLBACK")
    assert await store.stream_version("order-1") == 0

    await conn.execute("BEGIN")
    await store.declare_writer(conn)
    await conn.execute(sql.SQL("INSERT INTO {}.orders VALUES (%s)").format(table), [uuid.uuid4()])
    result = await store.append_on(conn, "order-1", store.prepare([NewEvent(Ticked(1))]), NO_STREAM)
    # A second append in the same transaction, after other writes: it is a writer already.
    await conn.execute(sql.SQL("INSERT INTO {}.orders VALUES (%s)").format(table), [uuid.uuid4()])
    await store.append_on(conn, "order-1", store.prepare([NewEvent(Ticked(2))]), 1)
    await conn.execute("COMMIT")
    assert [e.data.n for e in await store.read_stream("order-1")] == [1, 2]
    assert (await store.read_all()).checkpoint >= result.checkpoint
