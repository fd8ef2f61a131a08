"""The event store: one interface, a backend per URL scheme.

``memory://``, ``sqlite:///path/to/file.db`` (``sqlite:///:memory:`` too) and
``postgresql://user@host/db`` choose the backend; :func:`open_store` opens it.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from eventvault.domain import EventRegistry
from eventvault.errors import InvalidStoreURL
from eventvault.store.base import EventStore
from eventvault.store.codec import EventCodec
from eventvault.store.migrations import Component, Migration
from eventvault.store.records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendCondition,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    HorizonLag,
    LogPage,
    Metadata,
    NewEvent,
    Query,
    QueryItem,
    RawEvent,
    RecordedEvent,
    ScavengeProgress,
    SequencedEvents,
    Snapshot,
    SnapshotInfo,
    StoreCounts,
    StreamInfo,
    StreamLifecycle,
    StreamState,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendCondition",
    "AppendResult",
    "Checkpoint",
    "Component",
    "EventCodec",
    "EventStore",
    "ExpectedVersion",
    "HorizonLag",
    "LogPage",
    "Metadata",
    "Migration",
    "NewEvent",
    "Query",
    "QueryItem",
    "RawEvent",
    "RecordedEvent",
    "ScavengeProgress",
    "SequencedEvents",
    "Snapshot",
    "SnapshotInfo",
    "StoreCounts",
    "StreamInfo",
    "StreamLifecycle",
    "StreamState",
    "create_store",
    "open_store",
    "schema_version",
    "size_on_disk",
]


def create_store(url: str, *, registry: EventRegistry | None = None, **options: Any) -> EventStore:
    """Make (but do not open) the store ``url`` names.

    Options come from the URL's query string and from keyword arguments (which
    win); each backend documents its own.
    """
    if not isinstance(url, str):
        raise InvalidStoreURL(f"a store URL is a str, got {type(url).__name__}")
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from eventvault.store.memory import MemoryEventStore  # noqa: PLC0415

        if query or options:
            raise InvalidStoreURL(f"memory:// takes no options, got {sorted({*query, *options})}")
        return MemoryEventStore(registry=registry)
    if scheme == "sqlite":
        from eventvault.store.sqlite import SQLiteEventStore  # noqa: PLC0415

        if parts.netloc:
            raise InvalidStoreURL(
                f"{url!r}: a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = parts.path.removeprefix("/")
        if not path:
            raise InvalidStoreURL(f"{url!r} names no database file")
        return SQLiteEventStore(path, registry=registry, **{**query, **options})
    if scheme in ("postgresql", "postgres"):
        from eventvault.store.postgres import PostgresEventStore  # noqa: PLC0415

        conninfo = parts._replace(query="").geturl()
        return PostgresEventStore(conninfo, registry=registry, **{**query, **options})
    raise InvalidStoreURL(
        f"{url!r}: unknown store scheme {parts.scheme!r}; use memory://, sqlite:///path.db "
        "or postgresql://..."
    )


class _Opening:
    """``await open_store(url)`` or ``async with open_store(url) as store``."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def __await__(self) -> Generator[Any, None, EventStore]:
        return self._store.open().__await__()

    async def __aenter__(self) -> EventStore:
        return await self._store.open()

    async def __aexit__(self, *exc: object) -> None:
        await self._store.close()


def open_store(url: str, *, registry: EventRegistry | None = None, **options: Any) -> _Opening:
    """Open the store ``url`` names, creating or migrating its schema.

    Await it for a store you close yourself, or use it with ``async with``.
    """
    return _Opening(create_store(url, registry=registry, **options))


def schema_version(store: EventStore) -> int | None:
    """The event store schema version of an opened ``store`` (opening migrates to it); None for memory://."""
    if store.scheme == "sqlite":
        from eventvault.store import sqlite  # noqa: PLC0415

        return sqlite.SCHEMA_VERSION
    if store.scheme == "postgresql":
        from eventvault.store import postgres  # noqa: PLC0415

        return postgres.SCHEMA_VERSION
    return None


def size_on_disk(store: EventStore) -> int | None:
    """Bytes a SQLite store's file and its write-ahead log take; None for other backends."""
    path = str(getattr(store, "path", ""))
    if store.scheme != "sqlite" or not path or path == ":memory:":
        return None
    return sum(p.stat().st_size for p in (Path(path), Path(f"{path}-wal")) if p.exists())
