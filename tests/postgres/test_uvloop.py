"""The PostgreSQL store on uvloop's event loop: appends (alone and grouped), reads and a woken wait."""

from __future__ import annotations

import asyncio

import uvloop

from eventvault import NO_STREAM
from eventvault.store.postgres import PostgresEventStore
from eventvault.store.records import START


async def _round(url: str, schema: str, registry, notes) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    reader = PostgresEventStore(url, schema=schema, registry=registry, poll_interval=30.0)
    writer = PostgresEventStore(url, schema=schema, registry=registry, pool_max=4)
    try:
        await reader.open()
        await writer.open()
        # The poll is far off: the LISTEN connection is what wakes this wait.
        waiting = asyncio.ensure_future(reader.wait_for_events(START, timeout=60.0))
        appended = await writer.append("alone", notes("one", "two"), expected_version=NO_STREAM)
        async with asyncio.timeout(60):
            assert await waiting is True
        # More appends at once than append_concurrency: the rest go as groups (one pipeline each).
        many = await asyncio.gather(
            *(writer.append(f"s-{i}", notes(f"n{i}"), expected_version=NO_STREAM) for i in range(12))
        )
        assert [r.stream_version for r in many] == [1] * 12

        events = await reader.read_stream("alone")
        assert [e.data.text for e in events] == ["one", "two"]
        assert events[-1].checkpoint == appended.checkpoint
        assert await reader.stream_version("s-11") == 1
        # Every append is readable once each committed (nothing else writes here).
        page = await reader.read_all(limit=100)
        assert sorted(e.stream_id for e in page.events) == sorted(
            ["alone", "alone", *(f"s-{i}" for i in range(12))]
        )
        assert await reader.head() == page.checkpoint
    finally:
        await writer.close()
        await reader.close()


def test_a_round_of_appends_reads_and_a_wait_runs_on_uvloop(pg_url, schema, registry, notes):
    """On uvloop, appends (one and grouped), reads and a wait woken by a notification behave as on asyncio."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_round(pg_url, schema, registry, notes))
