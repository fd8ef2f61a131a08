"""``memory://``: the whole store in this process's memory, for tests and examples."""

from __future__ import annotations

import bisect
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from eventvault.domain import EventRegistry
from eventvault.errors import AppendConditionFailed, InvalidInput
from eventvault.store.base import (
    EventStore,
    Found,
    PreparedEvent,
    check_append_allowed,
    check_version_matches,
    deletion_marker,
    idempotent_result,
    recorded_deletions,
    stream_tags,
    versions_before,
)
from eventvault.store.personal import MemoryKeyStore
from eventvault.store.records import (
    START,
    AppendCondition,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    LogPage,
    Query,
    QueryItem,
    RecordedEvent,
    SequencedEvents,
    Snapshot,
    SnapshotInfo,
    StoreCounts,
    StreamInfo,
    StreamLifecycle,
    micros_to_datetime,
)

__all__ = ["MemoryEventStore"]


@dataclass(slots=True)
class _Row:
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    position: int
    event_type: str
    schema_version: int
    occurred_us: int
    recorded_us: int
    payload: bytes
    metadata: bytes
    tags: tuple[str, ...] = ()
    tagset: frozenset[str] = frozenset()
    removed: bool = False
    """Removed by a scavenge: no read returns it (it keeps its place, as positions are indexes)."""


@dataclass(slots=True)
class _Life:
    """A stream's delete and retention rules (only streams that have some)."""

    deleted_version: int = 0
    tombstoned: bool = False
    truncate_before: int = 0
    max_count: int | None = None
    max_age_us: int | None = None


@dataclass(slots=True)
class _Data:
    log: list[_Row] = field(default_factory=list)
    streams: dict[str, list[_Row]] = field(default_factory=dict)
    ids: dict[uuid.UUID, _Row] = field(default_factory=dict)
    # The positions of the events of each tag and of each type, ascending: a query
    # item walks its rarest tag's list (or its types' lists) from ``after`` on, so
    # a conditional append costs what its query matches, not the size of the log.
    by_tag: dict[str, list[int]] = field(default_factory=dict)
    by_type: dict[str, list[int]] = field(default_factory=dict)
    snapshots: dict[tuple[str, int], Snapshot] = field(default_factory=dict)
    life: dict[str, _Life] = field(default_factory=dict)
    removed: int = 0
    """How many rows a scavenge removed (0: every read may take the log as it is)."""
    keys: MemoryKeyStore = field(default_factory=MemoryKeyStore)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stores: weakref.WeakSet[MemoryEventStore] = field(default_factory=weakref.WeakSet)

    def add(self, rows: list[_Row]) -> None:
        """Store ``rows`` and index them by stream, id, type and tag (call holding ``lock``)."""
        self.log.extend(rows)
        for r in rows:
            self.streams.setdefault(r.stream_id, []).append(r)
            self.ids[r.event_id] = r
            self.by_type.setdefault(r.event_type, []).append(r.position)
            for tag in r.tags:
                self.by_tag.setdefault(tag, []).append(r.position)

    def deleted(self, stream_id: str) -> bool:
        """Whether the stream's last event is its ``$StreamDeleted`` (call holding ``lock``)."""
        life = self.life.get(stream_id)
        return (
            life is not None
            and life.deleted_version > 0
            and life.deleted_version == len(self.streams.get(stream_id, ()))
        )

    def announce(self, rows: Sequence[_Row] | None = None) -> None:
        """Wake every store sharing this data (call after releasing ``lock``), told of ``rows``' types."""
        types = None if rows is None else {r.event_type for r in rows}
        for store in self.stores:
            store._announce_append(types)  # noqa: SLF001 - stores sharing data wake each other


class MemoryEventStore(EventStore):
    """An in-memory store. ``share_with`` another one to see the same data."""

    scheme = "memory"
    supports_dcb = True
    wakes_by_type = True

    def __init__(
        self, *, registry: EventRegistry | None = None, share_with: MemoryEventStore | None = None
    ) -> None:
        super().__init__(registry=registry)
        self._data: _Data = share_with._data if share_with is not None else _Data()  # noqa: SLF001
        self.keys = self._data.keys
        self._data.stores.add(self)

    def _record(self, row: _Row) -> RecordedEvent:
        return RecordedEvent(
            self.codec,
            row.event_id,
            row.stream_id,
            row.stream_version,
            row.position,
            row.event_type,
            row.schema_version,
            row.occurred_us,
            row.recorded_us,
            row.payload,
            row.metadata,
            tags=row.tags,
        )

    async def _append(
        self, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        return await self._append_conditioned(stream_id, events, expected, None)

    async def _append_conditioned(
        self,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        condition: AppendCondition | None,
    ) -> AppendResult:
        d = self._data
        with d.lock:
            found = {
                e.event_id: Found(r.stream_id, r.stream_version, r.position, 0)
                for e in events
                if (r := d.ids.get(e.event_id)) is not None
            }
            life = d.life.get(stream_id)
            if life is not None:
                check_append_allowed(stream_id, life.tombstoned)
            done = idempotent_result(stream_id, events, found)
            if done is not None:
                return done
            stream = d.streams.get(stream_id)
            version = len(stream) if stream else 0
            visible = 0 if life is not None and life.deleted_version == version else version
            check_version_matches(stream_id, expected, visible)
            if condition is not None:
                after = condition.after or 0
                query = condition.fail_if_events_match
                conflict = min(self._first_matches(query, after), default=None)
                if conflict is not None:
                    raise AppendConditionFailed(query, condition.after, conflict)
            now = time.time_ns() // 1000
            rows = [
                _Row(
                    e.event_id,
                    stream_id,
                    version + i,
                    len(d.log) + i,
                    e.event_type,
                    e.schema_version,
                    e.occurred_us,
                    now,
                    e.payload,
                    e.metadata,
                    e.tags,
                    frozenset(e.tags),
                )
                for i, e in enumerate(events, start=1)
            ]
            d.add(rows)
        d.announce(rows)
        return AppendResult(
            stream_id,
            rows[-1].stream_version,
            tuple(r.position for r in rows),
            Checkpoint(0, rows[-1].position),
        )

    async def _stored_ids(self, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        with self._data.lock:
            return {i for i in event_ids if i in self._data.ids}

    async def _write_recorded(
        self, events: list[RecordedEvent], before: Mapping[str, int] | None = None
    ) -> None:
        d = self._data
        with d.lock:
            # Positions here are the log's indexes + 1: an imported log must be dense.
            for i, e in enumerate(events, start=len(d.log) + 1):
                if e.position != i:
                    raise InvalidInput(
                        f"the memory store keeps positions dense: event {e.event_id} is at "
                        f"position {e.position}, the next one is {i}"
                    )
            continued = versions_before(events)
            for stream_id, version in (continued if before is None else before).items():
                if continued[stream_id] != version:
                    raise InvalidInput(
                        f"the memory store keeps stream versions dense: {stream_id!r} cannot start "
                        f"at version {continued[stream_id] + 1}"
                    )
            for stream_id, version in continued.items():
                if len(d.streams.get(stream_id, ())) != version:
                    raise InvalidInput(f"nothing written: an append moved stream {stream_id!r} meanwhile")
            rows = [
                _Row(
                    e.event_id,
                    e.stream_id,
                    e.stream_version,
                    e.position,
                    e.event_type,
                    e.schema_version,
                    e.occurred_us,
                    e.recorded_us,
                    e.payload,
                    e.metadata_json,
                    e.tags,
                    frozenset(e.tags),
                )
                for e in events
            ]
            d.add(rows)
            for stream_id, version, tombstone in recorded_deletions(events):
                life = d.life.setdefault(stream_id, _Life())
                life.deleted_version, life.tombstoned = version, tombstone
                for key in [k for k in d.snapshots if k[0] == stream_id]:
                    del d.snapshots[key]
        d.announce(rows)

    async def _read_stream(  # noqa: PLR0913, PLR0917
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]:
        with self._data.lock:
            stream = list(self._data.streams.get(stream_id, ()))
        if as_of_us is not None:
            last = 0
            for r in stream:
                if r.recorded_us <= as_of_us:
                    last = r.stream_version
            stream = stream[:last]
        rows = stream[from_version - 1 : to_version]
        if self._data.removed:
            rows = [r for r in rows if not r.removed]
        if backwards:
            rows.reverse()
        if limit is not None:
            rows = rows[:limit]
        return [self._record(r) for r in rows]

    async def _stream_version(self, stream_id: str) -> int:
        with self._data.lock:
            return len(self._data.streams.get(stream_id, ()))

    async def _read_all(self, after: Checkpoint, limit: int, event_types: tuple[str, ...] | None) -> LogPage:
        d = self._data
        with d.lock:
            head = len(d.log)
            start = bisect.bisect_right(d.log, after.position, key=lambda r: r.position)
            if event_types is None and not d.removed:
                rows = d.log[start : start + limit]
            else:
                wanted = None if event_types is None else frozenset(event_types)
                rows = []
                for r in d.log[start:]:
                    if not r.removed and (wanted is None or r.event_type in wanted):
                        rows.append(r)
                        if len(rows) == limit:
                            break
        if len(rows) == limit:
            checkpoint = Checkpoint(0, rows[-1].position)
        else:  # the page reached the head: continue after it
            checkpoint = Checkpoint(0, max(head, after.position))
        return LogPage([self._record(r) for r in rows], checkpoint)

    def _candidates(self, item: QueryItem, after: int) -> Iterator[int]:
        """Positions after ``after`` that may match ``item``, ascending (the caller holds the lock)."""
        d = self._data
        if item.tags:
            # Every matching event carries every tag of the item: the rarest tag's
            # list holds them all.
            lists = [d.by_tag.get(t, []) for t in item.tags]
            rarest = min(lists, key=len)
            yield from rarest[bisect.bisect_right(rarest, after) :]
        elif item.types:
            merged: list[int] = []
            for t in item.types:
                positions = d.by_type.get(t, [])
                merged.extend(positions[bisect.bisect_right(positions, after) :])
            yield from sorted(merged)
        else:
            yield from range(after + 1, len(d.log) + 1)

    def _matching(self, item: QueryItem, after: int) -> Iterator[int]:
        log = self._data.log
        for p in self._candidates(item, after):
            row = log[p - 1]
            if not row.removed and item.matches(row.event_type, row.tagset):
                yield p

    def _first_matches(self, query: Query, after: int) -> Iterator[int]:
        """The first position after ``after`` each item of ``query`` matches."""
        for item in query.items:
            first = next(self._matching(item, after), None)
            if first is not None:
                yield first

    async def _read_query(
        self, query: Query, after: int, limit: int | None, backwards: bool
    ) -> SequencedEvents:
        d = self._data
        with d.lock:
            head = len(d.log)
            if query.matches_all:
                positions: list[int] = list(range(after + 1, head + 1))
            else:
                found: set[int] = set()
                for item in query.items:
                    found.update(self._matching(item, after))
                positions = sorted(found)
            if backwards:
                positions.reverse()
            if limit is not None and not d.removed:
                positions = positions[:limit]
            rows = [row for p in positions if not (row := d.log[p - 1]).removed]
        if limit is not None:
            rows = rows[:limit]
        return SequencedEvents([self._record(r) for r in rows], head)

    async def _head(self) -> Checkpoint:
        with self._data.lock:
            return Checkpoint(0, len(self._data.log)) if self._data.log else START

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        key = (snapshot.stream_id, snapshot.schema_version)
        with self._data.lock:
            old = self._data.snapshots.get(key)
            if old is None or old.stream_version <= snapshot.stream_version:
                self._data.snapshots[key] = snapshot

    async def _list_snapshots(
        self, prefix: str | None, stream_id: str | None, limit: int
    ) -> list[SnapshotInfo]:
        with self._data.lock:
            chosen = [
                snap
                for (sid, _), snap in self._data.snapshots.items()
                if (prefix is None or sid.startswith(prefix)) and (stream_id is None or sid == stream_id)
            ]
        chosen.sort(key=lambda snap: (snap.stream_id, snap.schema_version))
        return [
            SnapshotInfo(s.stream_id, s.schema_version, s.stream_version, len(s.state), s.created_at)
            for s in chosen[:limit]
        ]

    async def _drop_snapshots(self, prefix: str | None, stream_id: str | None) -> int:
        with self._data.lock:
            keys = [
                key
                for key in self._data.snapshots
                if (prefix is None or key[0].startswith(prefix))
                and (stream_id is None or key[0] == stream_id)
            ]
            for key in keys:
                del self._data.snapshots[key]
        return len(keys)

    async def _load_snapshot(self, stream_id: str, schema_version: int) -> Snapshot | None:
        with self._data.lock:
            return self._data.snapshots.get((stream_id, schema_version))

    async def _list_streams(self, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        d = self._data
        with d.lock:
            lasts = [rows[-1] for sid, rows in d.streams.items() if rows and not d.deleted(sid)]
        wanted = [
            r
            for r in lasts
            if (prefix is None or r.stream_id.startswith(prefix)) and (after is None or r.stream_id > after)
        ]
        chosen = sorted(wanted, key=lambda r: r.stream_id)[:limit]
        return [
            StreamInfo(r.stream_id, r.stream_version, r.position, micros_to_datetime(r.recorded_us))
            for r in chosen
        ]

    async def _get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        with self._data.lock:
            row = self._data.ids.get(event_id)
        return None if row is None or row.removed else self._record(row)

    async def _counts(self) -> StoreCounts:
        d = self._data
        with d.lock:
            # Only a stream with rules (in ``life``) can be deleted: a few, not every stream.
            deleted = sum(1 for sid in d.life if d.deleted(sid))
            head, streams = len(d.log), len(d.streams) - deleted
            events = head - d.removed
        return StoreCounts(events, streams, Checkpoint(0, head) if head else START)

    # -- deletes, truncation and retention -----------------------------------------

    async def _lifecycle(self, stream_id: str) -> StreamLifecycle:
        with self._data.lock:
            version = len(self._data.streams.get(stream_id, ()))
            life = self._data.life.get(stream_id)
            if life is None:
                return StreamLifecycle(stream_id, version)
            return StreamLifecycle(
                stream_id,
                version,
                life.deleted_version,
                life.tombstoned,
                life.truncate_before,
                life.max_count,
                None if life.max_age_us is None else timedelta(microseconds=life.max_age_us),
            )

    async def _delete_stream(
        self, stream_id: str, expected: ExpectedVersion, tombstone: bool
    ) -> AppendResult | None:
        d = self._data
        with d.lock:
            life = d.life.get(stream_id)
            if life is not None:
                check_append_allowed(stream_id, life.tombstoned)
            version = len(d.streams.get(stream_id, ()))
            visible = 0 if life is not None and life.deleted_version == version else version
            check_version_matches(stream_id, expected, visible)
            if visible == 0 and not tombstone:
                return None
            now = time.time_ns() // 1000
            tags = stream_tags(r.tags for r in d.streams.get(stream_id, ()) if not r.removed)
            e = deletion_marker(stream_id, version, tombstone, now, tags)
            row = _Row(
                e.event_id,
                stream_id,
                version + 1,
                len(d.log) + 1,
                e.event_type,
                e.schema_version,
                e.occurred_us,
                now,
                e.payload,
                e.metadata,
                e.tags,
                frozenset(e.tags),
            )
            d.add([row])
            life = d.life.setdefault(stream_id, _Life())
            life.deleted_version = version + 1
            life.tombstoned = tombstone
            for key in [k for k in d.snapshots if k[0] == stream_id]:
                del d.snapshots[key]
        d.announce()
        return AppendResult(stream_id, row.stream_version, (row.position,), Checkpoint(0, row.position))

    async def _set_retention(
        self,
        stream_id: str,
        *,
        truncate_before: int | None = None,
        retention: tuple[int | None, int | None] | None = None,
    ) -> None:
        with self._data.lock:
            life = self._data.life.setdefault(stream_id, _Life())
            if truncate_before is not None:
                life.truncate_before = truncate_before
            if retention is not None:
                life.max_count, life.max_age_us = retention

    async def _ruled_streams(self) -> list[str]:
        with self._data.lock:
            return sorted(self._data.life)

    async def _remove_events(self, stream_id: str, below: int) -> int:
        d = self._data
        removed = 0
        with d.lock:
            stream = d.streams.get(stream_id, [])
            for row in stream[: max(0, min(below, len(stream)) - 1)]:
                if not row.removed:
                    row.removed = True
                    removed += 1
            d.removed += removed
        return removed
