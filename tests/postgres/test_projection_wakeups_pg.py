"""PostgreSQL: a runner whose workers run elsewhere hears of their batches (NOTIFY), not only by polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from eventvault import NO_STREAM, EventRegistry, NewEvent
from eventvault.projections import Projection, ProjectionRunner, Session, handles
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
