"""Moving a ledger from SQLite to PostgreSQL with export and import: the log and the read models survive."""

from __future__ import annotations

from typing import Any

from archive_lifecycle import Noted, lifecycle_registry, shape, what_reads_show
from eventvault import (
    REDACTED,
    Repository,
    default_registry,
    export_events,
    export_keys,
    import_events,
    import_keys,
    verify_store,
)
from eventvault.projections import ProjectionRunner
from eventvault.projections._db import SQLiteReadModels
from eventvault.store.base import EventStore
from eventvault.store.sqlite import SQLiteEventStore
from eventvault_ledger.read_models import AccountsProjection, projections
from eventvault_ledger.seed import seed_demo

WAIT = 60.0  # generous bound; catch_up returns as soon as the projections get there


async def rebuilt(store: EventStore, path: str) -> dict[str, list[tuple[Any, ...]]]:
    """The ledger's read models built from ``store``'s whole log, every row in key order."""
    db = SQLiteReadModels(path)
    try:
        async with ProjectionRunner(store, projections(), read_models=db, idle_wait=0.2) as runner:
            assert await runner.catch_up(timeout=WAIT)
            return {
                t: db.query(f"SELECT * FROM {t} ORDER BY 1, 2")  # noqa: S608 - the projection's own names
                for t in AccountsProjection.tables
            }
    finally:
        db.close()


async def test_sqlite_to_postgres_and_back_is_byte_identical(open_store, tmp_path):
    """SQLite demo ledger → export → import into PostgreSQL → export: the same bytes, the same read models.

    The owner names are sealed: they read again once the keys are moved too.
    """
    source = await SQLiteEventStore(str(tmp_path / "ledger.db"), registry=default_registry).open()
    try:
        assert await seed_demo(Repository(source))
        first = tmp_path / "first.jsonl"
        exported = await export_events(source, first)
        target = await open_store(registry=default_registry)
        summary = await import_events(target, first)
        assert (summary.events, summary.imported, summary.skipped) == (exported.events, exported.events, 0)
        again = tmp_path / "again.jsonl"
        assert await export_events(target, again) == exported
        assert again.read_bytes() == first.read_bytes()
        opened = [e for e in (await target.read_all()).events if e.event_type == "AccountOpened"]
        assert {e.data.owner_name for e in opened} == {REDACTED}  # the keys stayed behind
        keys = tmp_path / "keys.jsonl"
        assert await export_keys(source, keys) == len(opened)
        assert await import_keys(target, keys) == len(opened)
        models = await rebuilt(source, str(tmp_path / "source-rm.db"))
        assert all(models.values())  # every table has rows: the comparison compares something
        assert await rebuilt(target, str(tmp_path / "target-rm.db")) == models
        # The log goes on above the imported positions.
        head = await target.head()
        assert head.position == exported.last_position
    finally:
        await source.close()


async def test_a_scavenged_sqlite_store_moves_to_postgres_with_its_rules(open_store, tmp_path):
    """Deletes, rules and a scavenge on SQLite: on PostgreSQL the copy reads and exports as the source."""
    source = await SQLiteEventStore(str(tmp_path / "shaped.db"), registry=lifecycle_registry).open()
    try:
        await shape(source)
        first = tmp_path / "first.jsonl"
        exported = await export_events(source, first)
        target = await open_store(registry=lifecycle_registry)
        summary = await import_events(target, first)
        assert (summary.imported, summary.streams) == (exported.events, 6)
        assert await what_reads_show(target) == await what_reads_show(source)
        assert (await verify_store(target)).ok
        again = tmp_path / "again.jsonl"
        await export_events(target, again)
        assert again.read_bytes() == first.read_bytes()
        assert (await target.append("b", [Noted("b7")], expected_version=6)).stream_version == 7
    finally:
        await source.close()
