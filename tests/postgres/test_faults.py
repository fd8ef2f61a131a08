"""Faults: connections killed under the store, a database that refuses connections, a server restart.

Whatever happens, calls fail with StoreUnavailable (never a psycopg error), work
again without reopening the store, and no acknowledged append is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventvault import ANY, NO_STREAM, StoreUnavailable
from eventvault.projections._db import PostgresReadModels


def backends(app: str) -> str:
    """SQL for the server processes of connections named ``app``."""
    return (
        "SELECT pid FROM pg_stat_activity "  # noqa: S608 - the name is made by the test
        f"WHERE application_name = '{app}' AND pid <> pg_backend_pid()"
    )


async def terminate(conn: psycopg.AsyncConnection, where: str, params: list[Any] | None = None) -> int:
    """Terminate the backends the query selects (waiting until they are gone); how many."""
    cur = await conn.execute(
        f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM ({where}) AS victims",  # noqa: S608
        params,
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def count(conn: psycopg.AsyncConnection, query: str, params: list[Any] | None = None) -> int:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_killed_pool_connections_are_replaced_without_an_error(open_store, raw, notes):
    """After every pooled connection is terminated, the next calls reconnect and succeed."""
    app = f"evt-kill-{uuid.uuid4().hex[:8]}"
    store = await open_store(application_name=app, pool_min=3)
    first = await store.append("s", notes("a"), expected_version=NO_STREAM)
    admin = await raw()
    assert await terminate(admin, backends(app)) >= 1

    second = await store.append("s", notes("b"), expected_version=1)
    assert second.stream_version == 2
    assert [e.data.text for e in await store.read_stream("s")] == ["a", "b"]
    assert await terminate(admin, backends(app)) >= 1
    assert [e.data.text for e in (await store.read_all())] == ["a", "b"]
    assert await store.head() == second.checkpoint > first.checkpoint


async def test_an_append_cut_off_mid_statement_is_retried_and_lands_once(
    open_store, held, raw, notes, eventually
):
    """An append whose backend dies while it waits on a lock is retried on a new connection and lands once."""
    app = f"evt-cut-{uuid.uuid4().hex[:8]}"
    store = await open_store(application_name=app)
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    holder = await held(store)
    await holder.append("s", notes("held"), expected_version=1)  # holds the stream's row lock
    admin = await raw()
    waiting = backends(app) + " AND wait_event_type = 'Lock'"

    sent = notes("b")
    task = asyncio.create_task(store.append("s", sent, expected_version=ANY))
    [victim] = await eventually(
        lambda: _pids(admin, waiting), lambda pids: len(pids) == 1, what="the append to wait on the lock"
    )
    assert await terminate(admin, "SELECT %s::int AS pid", [victim]) == 1
    # The store retries on a fresh connection, which waits on the same lock.
    await eventually(
        lambda: _pids(admin, waiting),
        lambda pids: len(pids) == 1 and pids[0] != victim,
        what="the retry to wait on the lock",
    )
    await holder.rollback()
    result = await task
    assert result.stream_version == 2
    stream = await store.read_stream("s")
    assert [e.data.text for e in stream] == ["a", "b"]
    assert [e.event_id for e in stream][1] == sent[0].event_id


async def _pids(conn: psycopg.AsyncConnection, query: str) -> list[int]:
    cur = await conn.execute(query)
    return [r[0] for r in await cur.fetchall()]


async def test_an_append_whose_outcome_is_unknown_says_so_and_its_retry_lands_once(
    database, open_store, pg_url, raw, notes, eventually
):
    """A connection lost for good: StoreUnavailable says the outcome is unknown; a retry lands once."""
    url = psycopg.conninfo.make_conninfo(pg_url, dbname=database)
    app = f"evt-unknown-{uuid.uuid4().hex[:8]}"
    store = await open_store(url, application_name=app, pool_min=1, pool_max=1, pool_timeout=0.5)
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    holder = await raw(url)
    await holder.execute("BEGIN")
    await holder.execute(f"SELECT * FROM {store.schema}.streams WHERE stream_id = 's' FOR UPDATE")  # noqa: S608
    admin = await raw()
    waiting = backends(app) + " AND wait_event_type = 'Lock'"

    sent = notes("b")
    task = asyncio.create_task(store.append("s", sent, expected_version=1))
    await eventually(lambda: _pids(admin, waiting), lambda pids: len(pids) == 1, what="the append to block")
    ident = sql.Identifier(database)
    await admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident))
    try:
        await terminate(admin, backends(app))
        with pytest.raises(StoreUnavailable) as caught:
            await task
    finally:
        await admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident))
    message = str(caught.value)
    assert "append to 's'" in message
    assert "outcome is unknown" in message
    assert "same event ids is safe" in message
    await holder.execute("COMMIT")

    async def retry():
        try:
            return await store.append("s", sent, expected_version=1)
        except StoreUnavailable:
            return None  # the pool is still reconnecting: the caller retries, as told

    result = await eventually(retry, lambda r: r is not None, what="the retried append to land")
    assert result.stream_version == 2
    again = await store.append("s", sent, expected_version=1)  # one more retry: still the same result
    assert again == result
    assert [e.event_id for e in await store.read_stream("s")][1:] == [sent[0].event_id]


# -- a real restart ----------------------------------------------------------------------


async def _server_up(url: str) -> bool:
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=2)
    except psycopg.OperationalError:
        return False
    await conn.close()
    return True


class Writer:
    """Appends one event after another, retrying each until it is acknowledged."""

    def __init__(self, store, notes) -> None:
        self.store = store
        self.notes = notes
        self.acknowledged: list[uuid.UUID] = []
        self.failures: list[StoreUnavailable] = []
        self.stop = asyncio.Event()
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            sent = self.notes(f"#{i}")
            # Retry with the same event id until acknowledged: whatever became of a
            # failed try, the event must end up in the stream exactly once.
            while True:
                try:
                    await self.store.append("restart", sent, expected_version=ANY)
                    break
                except StoreUnavailable as exc:
                    # No pause needed: with the server down, each try first waits
                    # pool_timeout for a connection.
                    self.failures.append(exc)
                    await self._changed()
            self.acknowledged.append(sent[0].event_id)
            i += 1
            await self._changed()

    async def _changed(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def until(self, condition) -> None:
        """Wait until ``condition()`` holds, checked after every try."""
        async with self._progress:
            await self._progress.wait_for(condition)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_server_restart_fails_calls_clearly_then_the_store_works_and_lost_nothing(
    open_store, notes, private_cluster, eventually, mode
):
    """While the server is down calls raise StoreUnavailable; then the same store works, and lost nothing.

    The server is this test's own, stopped as an operator would (fast) or as a crash would (immediate).
    """
    pg_url = private_cluster.url()
    store = await open_store(pg_url, pool_timeout=0.5, pool_min=2)
    writer = Writer(store, notes)
    acknowledged, failures = writer.acknowledged, writer.failures
    task = asyncio.create_task(writer.run())
    try:
        async with asyncio.timeout(120):
            await writer.until(lambda: len(acknowledged) >= 20)
            await asyncio.to_thread(private_cluster.stop, mode)
            await writer.until(lambda: len(failures) >= 3)
            with pytest.raises(
                StoreUnavailable, match=r"read_all: no connection to PostgreSQL at .* within 0\.5s"
            ):
                await store.read_all()
            before_start = len(acknowledged)
            await asyncio.to_thread(private_cluster.start)
            await eventually(
                lambda: _server_up(pg_url), bool, within=60, what="the server to accept connections"
            )
            await writer.until(lambda: len(acknowledged) >= before_start + 20)
            writer.stop.set()
            await task
    finally:
        writer.stop.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert all(str(f).startswith("append to 'restart': ") for f in failures), failures
    assert all("PostgreSQL at" in str(f) for f in failures), failures
    stored = [e.event_id for e in await store.read_stream("restart")]
    assert stored == acknowledged  # every acknowledged append, once each, in order
    assert [e.event_id async for e in store.iter_all()] == acknowledged


async def test_a_read_model_transaction_idle_past_its_limit_is_ended_and_is_unavailable(
    pg_url, schema, raw, eventually
):
    """limit_idle: the server ends the idle transaction; the next statement: StoreUnavailable."""
    db = PostgresReadModels(pg_url, schema=schema)
    admin = await raw()
    try:
        with pytest.raises(StoreUnavailable), db.transaction() as conn:  # noqa: PT012 - the fault is inside
            db.limit_idle(conn, 0.05)
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            await eventually(
                lambda: count(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]),
                lambda n: n == 0,
                what="the server to end the idle transaction",
            )
            conn.execute("SELECT 1")  # whichever error the driver sees, the session is gone
        assert db.query("SELECT 1") == [(1,)]  # on a fresh connection
    finally:
        db.close()
