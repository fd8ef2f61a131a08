"""A blocking facade over any event store, for scripts and REPLs.

::

    from eventvault.sync import open_store_sync

    with open_store_sync("sqlite:///ledger.db") as store:
        store.append("todo-1", [TaskAdded("milk")], expected_version=NO_STREAM)
        print(store.read_stream("todo-1"))

The store runs on its own event loop in a background thread, so the facade
works the same in plain scripts and inside programs that run a loop of their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from datetime import datetime
from typing import Any, Self, TypeVar

from eventvault.domain import Aggregate, EventRegistry
from eventvault.repository import Repository
from eventvault.store import create_store
from eventvault.store.base import EventStore
from eventvault.store.records import (
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    LogPage,
    Metadata,
    NewEvent,
    Query,
    RecordedEvent,
    SequencedEvents,
    Snapshot,
)

__all__ = ["SyncEventStore", "SyncRepository", "open_store_sync"]

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="eventvault-sync", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SyncEventStore:
    """The :class:`~eventvault.store.EventStore` API, blocking."""

    def __init__(self, store: EventStore) -> None:
        self._loop = _Loop()
        self.store = store
        try:
            self._loop.run(store.open())
        except BaseException:
            self._loop.stop()
            raise

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the underlying store on its loop and wait for it."""
        return self._loop.run(coro)

    def append(
        self, stream_id: str, events: Iterable[NewEvent | object], *, expected_version: ExpectedVersion
    ) -> AppendResult:
        """See :meth:`EventStore.append`."""
        return self.run(self.store.append(stream_id, events, expected_version=expected_version))

    def append_events(self, events: Iterable[NewEvent | object], **options: Any) -> AppendResult:
        """See :meth:`EventStore.append_events` (condition, stream_id, expected_version)."""
        return self.run(self.store.append_events(events, **options))

    def read(self, query: Query, **options: Any) -> SequencedEvents:
        """See :meth:`EventStore.read` (after, limit, backwards)."""
        return self.run(self.store.read(query, **options))

    def read_stream(self, stream_id: str, **options: Any) -> list[RecordedEvent]:
        """See :meth:`EventStore.read_stream`."""
        return self.run(self.store.read_stream(stream_id, **options))

    def read_all(self, after: Checkpoint | str | None = None, **options: Any) -> LogPage:
        """See :meth:`EventStore.read_all`."""
        return self.run(self.store.read_all(after, **options))

    def stream_version(self, stream_id: str) -> int:
        """See :meth:`EventStore.stream_version`."""
        return self.run(self.store.stream_version(stream_id))

    def head(self) -> Checkpoint:
        """See :meth:`EventStore.head`."""
        return self.run(self.store.head())

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """See :meth:`EventStore.save_snapshot`."""
        self.run(self.store.save_snapshot(snapshot))

    def load_snapshot(
        self, stream_id: str, *, schema_version: int, max_version: int | None = None
    ) -> Snapshot | None:
        """See :meth:`EventStore.load_snapshot`."""
        return self.run(
            self.store.load_snapshot(stream_id, schema_version=schema_version, max_version=max_version)
        )

    def close(self) -> None:
        """Close the store and stop its thread. Idempotent."""
        if self._loop.thread.is_alive():
            try:
                self.run(self.store.close())
            finally:
                self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncRepository:
    """The :class:`~eventvault.repository.Repository` API, blocking."""

    def __init__(self, store: SyncEventStore, **options: Any) -> None:
        self._store = store
        self.repository = Repository(store.store, **options)

    def load(
        self, cls: type[A], aggregate_id: str, *, version: int | None = None, as_of: datetime | None = None
    ) -> A:
        """See :meth:`Repository.load`."""
        return self._store.run(self.repository.load(cls, aggregate_id, version=version, as_of=as_of))

    def save(self, aggregate: Aggregate, *, metadata: Metadata | None = None) -> AppendResult | None:
        """See :meth:`Repository.save`."""
        return self._store.run(self.repository.save(aggregate, metadata=metadata))


def open_store_sync(url: str, *, registry: EventRegistry | None = None, **options: Any) -> SyncEventStore:
    """Open the store ``url`` names, for blocking use (close it, or use ``with``)."""
    return SyncEventStore(create_store(url, registry=registry, **options))
