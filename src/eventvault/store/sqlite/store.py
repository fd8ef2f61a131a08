"""SQLiteEventStore: the EventStore API, appends from the writer (writer.py), reads over reads.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from eventvault.errors import EventVaultError, InvalidInput
from eventvault.store.base import prefix_end, recorded_deletions, versions_before
from eventvault.store.records import (
    START,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    LogPage,
    Query,
    RecordedEvent,
    SequencedEvents,
    Snapshot,
    SnapshotInfo,
    StoreCounts,
    StreamInfo,
    StreamLifecycle,
    datetime_to_micros,
    micros_to_datetime,
)
from eventvault.store.sqlite import reads
from eventvault.store.sqlite.core import NOT_INLINE
from eventvault.store.sqlite.options import check_query_text, check_text
from eventvault.store.sqlite.reads import MAX_INT, StoredSnapshot
from eventvault.store.sqlite.schema import TAG_SEPARATOR
from eventvault.store.sqlite.writer import _SQLiteWriter
from eventvault.store.sqlite.writes import (
    remove_events,
    stored_ids,
    write_delete,
    write_recorded,
    write_retention,
    write_snapshot,
    write_truncate,
)

_INLINE_ROWS = 64  # a read on the caller's thread returns at most this many events


class SQLiteEventStore(_SQLiteWriter):
    """An event store in one SQLite file (see the package documentation for options)."""

    scheme = "sqlite"
    supports_dcb = True
    wakes_by_type = True

    async def _read_stream(  # noqa: PLR0913, PLR0917 - the signature EventStore defines
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]:
        check_text("a stream id", stream_id)
        if from_version > MAX_INT:
            return []
        upper = MAX_INT if to_version is None else min(to_version, MAX_INT)
        count = -1 if limit is None else min(limit, MAX_INT)
        codec = self.codec
        if as_of_us is None:
            sql = reads.SQL_STREAM_BACK if backwards else reads.SQL_STREAM_FWD
            params: tuple[Any, ...] = (stream_id, from_version, upper, count)
        else:
            sql = reads.SQL_STREAM_AS_OF_BACK if backwards else reads.SQL_STREAM_AS_OF_FWD
            params = (stream_id, from_version, upper, count, max(min(as_of_us, MAX_INT), -MAX_INT))
        if as_of_us is None and self._inline_ok():
            head = _INLINE_ROWS if count < 0 else min(count, _INLINE_ROWS)
            first = self._run_inline(reads.stream_events, codec, sql, (*params[:3], head))
            if first is not NOT_INLINE:
                if len(first) < head or head == count:
                    return cast("list[RecordedEvent]", first)
                # A long stream: the rest comes from a reader thread.
                last = first[-1].stream_version
                rest_from, rest_upper = (from_version, last - 1) if backwards else (last + 1, upper)
                rest_count = -1 if count < 0 else count - head
                rest = await self._read(
                    reads.stream_events, codec, sql, (stream_id, rest_from, rest_upper, rest_count)
                )
                return [*first, *rest]
        rows: list[RecordedEvent] = await self._read(reads.stream_events, codec, sql, params)
        return rows

    async def _stream_version(self, stream_id: str) -> int:
        check_text("a stream id", stream_id)
        version = self._run_inline(reads.stream_version, stream_id) if self._inline_ok() else NOT_INLINE
        if version is NOT_INLINE:
            version = await self._read(reads.stream_version, stream_id)
        return cast("int", version)

    async def _read_all(self, after: Checkpoint, limit: int, event_types: tuple[str, ...] | None) -> LogPage:
        if event_types is not None:
            for t in event_types:
                check_text("an event type", t, InvalidInput)
        if after.position > MAX_INT:  # past any position SQLite can hold
            return LogPage([], Checkpoint(0, after.position))
        page: LogPage = await self._read(reads.log_page, self.codec, after.position, limit, event_types)
        return page

    async def _read_category(self, stream_prefix: str, after: Checkpoint, limit: int) -> LogPage:
        check_text("a stream prefix", stream_prefix, InvalidInput)
        if after.position > MAX_INT:
            return LogPage([], Checkpoint(0, after.position))
        upper = prefix_end(stream_prefix)
        page: LogPage = await self._read(
            reads.category_page,
            self.codec,
            stream_prefix,
            b"" if upper is None else upper,
            after.position,
            limit,
        )
        return page

    async def _list_streams(self, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        lower = prefix or ""
        if prefix is not None:
            check_text("a stream prefix", prefix, InvalidInput)
        if after is not None:
            check_text("a stream id", after)
        upper = None if prefix is None else prefix_end(prefix)
        rows = await self._read(
            reads.list_streams, lower, b"" if upper is None else upper, after or "", limit
        )
        return [StreamInfo(s, v, p, micros_to_datetime(t)) for s, v, p, t in rows]

    async def _get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        found: RecordedEvent | None = await self._read(reads.get_event, self.codec, event_id.bytes)
        return found

    async def _counts(self) -> StoreCounts:
        events, streams, last = await self._read(reads.counts)
        return StoreCounts(events, streams, Checkpoint(0, last) if last else START)

    async def _read_query(
        self, query: Query, after: int, limit: int | None, backwards: bool
    ) -> SequencedEvents:
        check_query_text(query)
        count = -1 if limit is None else min(limit, MAX_INT)
        if after >= MAX_INT:  # past any position SQLite can hold: nothing after it
            return SequencedEvents([], (await self._head()).position)
        found: SequencedEvents = await self._read(
            reads.query_page, self.codec, query, after, count, backwards
        )
        return found

    async def _head(self) -> Checkpoint:
        position = self._run_inline(reads.head) if self._inline_ok() else NOT_INLINE
        if position is NOT_INLINE:
            position = await self._read(reads.head)
        return Checkpoint(0, cast("int", position)) if position else START

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        check_text("a stream id", snapshot.stream_id)
        if snapshot.stream_version > MAX_INT or snapshot.schema_version > MAX_INT:
            raise InvalidInput("a snapshot's stream_version and schema_version must be below 2**63 on SQLite")
        if not isinstance(snapshot.created_at, datetime) or snapshot.created_at.utcoffset() is None:
            raise InvalidInput(f"a snapshot's created_at must be timezone-aware, got {snapshot.created_at!r}")
        row = (
            snapshot.stream_id,
            snapshot.schema_version,
            snapshot.stream_version,
            snapshot.state,
            datetime_to_micros(snapshot.created_at),
        )
        if not self._opened:
            await self.open()
        await self._submit(self._wq, write_snapshot, (row,), write=True)

    async def _stored_ids(self, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        found: set[uuid.UUID] = await self._read(stored_ids, event_ids)
        return found

    async def _write_recorded(
        self, events: list[RecordedEvent], before: Mapping[str, int] | None = None
    ) -> None:
        rows = []
        tags: list[tuple[str, int]] = []
        for e in events:
            check_text("a stream id", e.stream_id)
            if e.position > MAX_INT or e.stream_version > MAX_INT:
                raise InvalidInput(
                    f"event {e.event_id}: positions and versions must be below 2**63 on SQLite"
                )
            meta = e.metadata_json
            rows.append(
                (
                    e.position,
                    e.event_id.bytes,
                    e.stream_id,
                    e.stream_version,
                    e.event_type,
                    e.schema_version,
                    e.occurred_us,
                    e.recorded_us,
                    e.payload,
                    None if meta == b"{}" else meta,
                    TAG_SEPARATOR.join(e.tags) if e.tags else None,
                )
            )
            tags.extend((tag, e.position) for tag in e.tags)
        if not self._opened:
            await self.open()
        refused = await self._submit(
            self._wq,
            write_recorded,
            (rows, tags, versions_before(events) if before is None else before, recorded_deletions(events)),
            write=True,
        )
        if refused is not None:
            raise InvalidInput(f"nothing written: {refused}")

    async def _list_snapshots(
        self, prefix: str | None, stream_id: str | None, limit: int
    ) -> list[SnapshotInfo]:
        lower, upper = _snapshot_range(prefix, stream_id)
        rows = await self._read(reads.list_snapshots, lower, upper, stream_id, limit)
        return [SnapshotInfo(s, schema, v, size, micros_to_datetime(t)) for s, schema, v, size, t in rows]

    async def _drop_snapshots(self, prefix: str | None, stream_id: str | None) -> int:
        lower, upper = _snapshot_range(prefix, stream_id)
        if not self._opened:
            await self.open()
        dropped: int = await self._submit(
            self._wq, reads.drop_snapshots, (lower, upper, stream_id), write=True
        )
        return dropped

    async def _load_snapshot(self, stream_id: str, schema_version: int) -> Snapshot | None:
        check_text("a stream id", stream_id)
        if schema_version > MAX_INT:
            return None
        stored: Any = (
            self._run_inline(reads.load_snapshot, stream_id, schema_version)
            if self._inline_ok()
            else NOT_INLINE
        )
        if stored is NOT_INLINE:
            stored = await self._read(reads.load_snapshot, stream_id, schema_version)
        return None if stored is None else _snapshot(stream_id, schema_version, stored)

    async def _snapshot_and_stream(
        self, stream_id: str, schema_version: int, to_version: int | None
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        # Both in one read (the base class makes two): on this thread when the
        # events after the snapshot are few, else on a reader thread.
        check_text("a stream id", stream_id)
        upper = MAX_INT if to_version is None else min(to_version, MAX_INT)
        schema = min(schema_version, MAX_INT)  # no snapshot is stored past 2**63 - 1
        codec = self.codec
        found: Any = (
            self._run_inline(reads.snapshot_and_stream, codec, stream_id, schema, upper, _INLINE_ROWS)
            if self._inline_ok()
            else NOT_INLINE
        )
        if found is NOT_INLINE or len(found[1]) == _INLINE_ROWS:
            found = await self._read(reads.snapshot_and_stream, codec, stream_id, schema, upper, -1)
        stored, events = found
        if stored is None or schema != schema_version:
            return None, events
        return _snapshot(stream_id, schema_version, stored), events

    # -- deletes, truncation and retention -----------------------------------------

    async def _lifecycle(self, stream_id: str) -> StreamLifecycle:
        check_text("a stream id", stream_id)
        row: Any = self._run_inline(reads.lifecycle, stream_id) if self._inline_ok() else NOT_INLINE
        if row is NOT_INLINE:
            row = await self._read(reads.lifecycle, stream_id)
        version, deleted, tombstoned, before, max_count, max_age_us = row
        return StreamLifecycle(
            stream_id,
            version or 0,
            deleted or 0,
            bool(tombstoned),
            before or 0,
            max_count,
            None if max_age_us is None else timedelta(microseconds=max_age_us),
        )

    async def _delete_stream(
        self, stream_id: str, expected: ExpectedVersion, tombstone: bool
    ) -> AppendResult | None:
        check_text("a stream id", stream_id)
        if not self._opened:
            await self.open()
        now = time.time_ns() // 1000
        outcome = await self._submit(
            self._wq, write_delete, (stream_id, expected, tombstone, now), write=True
        )
        if isinstance(outcome, EventVaultError):
            raise outcome
        return cast("AppendResult | None", outcome)

    async def _set_retention(
        self,
        stream_id: str,
        *,
        truncate_before: int | None = None,
        retention: tuple[int | None, int | None] | None = None,
    ) -> None:
        check_text("a stream id", stream_id)
        for value in (truncate_before, *(retention or ())):
            if value is not None and value > MAX_INT:
                raise InvalidInput("versions, counts and ages must be below 2**63 on SQLite")
        if not self._opened:
            await self.open()
        if truncate_before is not None:
            await self._submit(self._wq, write_truncate, (stream_id, truncate_before), write=True)
        if retention is not None:
            await self._submit(self._wq, write_retention, (stream_id, *retention), write=True)

    async def _ruled_streams(self) -> list[str]:
        streams: list[str] = await self._read(reads.ruled_streams)
        return streams

    async def _remove_events(self, stream_id: str, below: int) -> int:
        if not self._opened:
            await self.open()
        removed: int = await self._submit(
            self._wq, remove_events, (stream_id, min(below, MAX_INT)), write=True
        )
        return removed


def _snapshot_range(prefix: str | None, stream_id: str | None) -> tuple[str, str | bytes]:
    """The [lower, upper) range of stream ids a snapshot listing or drop covers (b"": no end)."""
    if stream_id is not None:
        check_text("a stream id", stream_id)
    if prefix is None:
        return "", b""
    check_text("a category", prefix, InvalidInput)
    upper = prefix_end(prefix)
    return prefix, b"" if upper is None else upper


def _snapshot(stream_id: str, schema_version: int, stored: StoredSnapshot) -> Snapshot:
    return Snapshot(
        stream_id, stored.stream_version, schema_version, stored.state, micros_to_datetime(stored.created_us)
    )
