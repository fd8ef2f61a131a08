"""PostgreSQL: a runner whose workers run elsewhere hears of their batches (NOTIFY), not only by polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from eventvault import NO_STREAM, EventRegistry, NewEvent
from eventvault.projections import Projection, ProjectionRunner, Session, handles
from eventvault.projections._wakeups import ProgressListener, Signal
from eventvault.store.postgres import PostgresEventStore
from eventvault.store.records import RecordedEvent

WAIT = 60.0
HOUR: dict[str, Any] = {"idle_wait": 3600, "lease_seconds": 3600}


def texts_projection(registry: EventRegistry) -> Projection:
    """The texts noted per stream, in one row each."""
    noted = registry.of_name("pg.Noted").cls

    class Texts(Projection):
        name = "texts"
        tables = ("texts",)
        schema = (
            "CREATE TABLE {texts} (stream TEXT PRIMARY KEY, texts TEXT NOT NULL, version BIGINT NOT NULL)",
        )

        @handles(noted)
        def _noted(self, db: Session, e: RecordedEvent) -> None:
            db.execute(
                "INSERT INTO {texts} (stream, texts, version) VALUES (?, ?, ?) "
                "ON CONFLICT (stream) DO UPDATE "
                "SET texts = {texts}.texts || excluded.texts, version = excluded.version "
                "WHERE {texts}.version < excluded.version",
                (e.stream_id, e.data.text, e.stream_version),
            )

    return Texts()


async def test_a_prepared_runner_hears_of_progress_made_elsewhere_through_notify(
    open_store: Callable[..., Awaitable[PostgresEventStore]],
    registry: EventRegistry,
    notes: Callable[..., list[NewEvent]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers on one store, queries on another: wait_for wakes on their commit, its re-read at an hour."""
    monkeypatch.setattr("eventvault.projections._runner._WAIT_FOR_POLL", 3600.0)
    elsewhere = await open_store()
    here = await open_store()
    queries = ProjectionRunner(here, [texts_projection(registry)], **HOUR)
    await queries.prepare()
    try:
        async with ProjectionRunner(elsewhere, [texts_projection(registry)], **HOUR) as workers:
            first = await elsewhere.append("p-1", notes("a"), expected_version=NO_STREAM)
            assert await workers.wait_for(first.checkpoint, timeout=WAIT)
        assert await queries.wait_for(first.checkpoint, timeout=WAIT)  # applied: no wait
        # With the workers stopped, an append that nobody applies: the wait begins before they do.
        second = await elsewhere.append("p-1", notes("b"), expected_version=1)
        waiting = asyncio.ensure_future(queries.wait_for(second.checkpoint, timeout=WAIT))
        done, _ = await asyncio.wait([waiting], timeout=0.5)
        assert not done
        async with ProjectionRunner(elsewhere, [texts_projection(registry)], **HOUR):
            # Woken by their batch's NOTIFY: without it, only its deadline (WAIT) would end the wait.
            assert await asyncio.wait_for(waiting, WAIT / 2)
        assert queries.db.query("SELECT texts FROM texts") == [("ab",)]
    finally:
        await queries.stop()


async def test_the_progress_listener_connects_again_when_its_connection_is_lost(
    pg_url: str, raw: Callable[..., Awaitable[Any]], eventually: Callable[..., Awaitable[Any]]
) -> None:
    """Its backend terminated: the listener connects again, calls back once, and hears the next one."""
    heard = Signal()
    calls = 0

    def on_progress() -> None:
        nonlocal calls
        calls += 1
        heard.fire()

    channel = f"eventvault.progress.test_{uuid.uuid4().hex[:8]}"
    listener = ProgressListener(pg_url, channel, on_progress)
    conn = await raw()

    async def listening_pids() -> list[int]:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query = %s", (f'LISTEN "{channel}"',)
        )
        return [row[0] for row in await cur.fetchall()]

    async def told(expected: int) -> None:
        while calls < expected:
            waiter = heard.waiter()
            await asyncio.wait_for(waiter.wait(), WAIT)

    listener.start()
    try:
        await told(1)  # connected: the call for batches committed while nobody listened
        (pid,) = await eventually(listening_pids, within=WAIT)
        await conn.execute("SELECT pg_notify(%s, '')", (channel,))
        await told(2)
        await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await told(3)  # connected again
        await eventually(lambda: _other_than(listening_pids, pid), within=WAIT)
        await conn.execute("SELECT pg_notify(%s, '')", (channel,))
        await told(4)
    finally:
        await listener.stop()
    await listener.stop()  # a second stop does nothing


async def _other_than(pids: Callable[[], Awaitable[list[int]]], old: int) -> list[int]:
    return [p for p in await pids() if p != old]


async def test_stopping_a_listener_that_failed_logs_its_error_and_does_not_raise(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the listener (here its callback raising) must not stop the runner's own stop half-way."""
    called = asyncio.Event()

    def broken() -> None:
        called.set()
        raise RuntimeError("a bug")

    listener = ProgressListener(pg_url, f"eventvault.progress.test_{uuid.uuid4().hex[:8]}", broken)
    listener.start()
    await asyncio.wait_for(called.wait(), WAIT)
    with caplog.at_level("ERROR", logger="eventvault.projections"):
        await listener.stop()
    assert "had failed" in caplog.text
    assert "a bug" in caplog.text
