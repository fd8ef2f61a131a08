"""Reads: a stream, pages of the global log below the read horizon, the head, snapshots, the horizon's lag.

Every read runs through psycopg's cursor, prepared on each pooled connection
(``prepare=True``), results in binary; stream reads, the hottest, run through
``_libpq``. Rows become the store's own types as they are loaded: events
straight into :class:`RecordedEvent` (the statements select its columns in the
order of its arguments), everything else into small named tuples (psycopg's
row factories).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from psycopg.rows import RowMaker, args_row

from eventvault.store.codec import EventCodec
from eventvault.store.postgres._connections import Conn, Connections
from eventvault.store.postgres._libpq import Prepared
from eventvault.store.postgres._schema import (
    EVENT_COLUMN_COUNT,
    NO_LIMIT,
    SNAPSHOT_AND_STREAM_EVENT_AT,
    Statements,
)
from eventvault.store.records import (
    START,
    Checkpoint,
    HorizonLag,
    LogPage,
    RecordedEvent,
    Snapshot,
    SnapshotInfo,
    StreamInfo,
    StreamLifecycle,
    micros_to_datetime,
)

_TAGS: Final = EVENT_COLUMN_COUNT - 1  # the last of an event's columns


class _FilteredRow(NamedTuple):
    """A row of a filtered page: a matching event (None when none matched), and the readable log's head."""

    event: RecordedEvent | None
    head: Checkpoint


class _TxId(NamedTuple):
    tx: int


class _SnapshotRow(NamedTuple):
    stream_version: int
    state: bytes
    created_at: datetime


class _Version(NamedTuple):
    version: int


class _StreamRow(NamedTuple):
    stream_id: str
    version: int
    position: int
    recorded_us: int


_checkpoint_rows: Final = args_row(Checkpoint)
_tx_rows: Final = args_row(_TxId)
_snapshot_rows: Final = args_row(_SnapshotRow)
_version_rows: Final = args_row(_Version)
_stream_rows: Final = args_row(_StreamRow)
_snapshot_info_rows: Final = args_row(SnapshotInfo)
_lag_rows: Final = args_row(HorizonLag)


class Reads:
    """The store's reads, each on a pooled connection through :meth:`Connections.run`."""

    def __init__(
        self, db: Connections, statements: Statements, codec: EventCodec, prepared: Prepared
    ) -> None:
        self._db = db
        self._prepared = prepared
        self._sql = statements
        self._codec = codec

        def event(values: Sequence[Any]) -> RecordedEvent:
            # tags load as a list; most events have none, and share the empty tuple
            tags = values[_TAGS]
            e = RecordedEvent(codec, *values[:_TAGS])
            if tags:
                e.tags = tuple(tags)
            return e

        def event_rows(_cursor: Any) -> RowMaker[RecordedEvent]:
            return event

        def filtered_rows(_cursor: Any) -> RowMaker[_FilteredRow]:
            def row(values: Any) -> _FilteredRow:
                head = Checkpoint(values[EVENT_COLUMN_COUNT], values[EVENT_COLUMN_COUNT + 1])
                if values[0] is None:  # the page is empty: only the head
                    return _FilteredRow(None, head)
                return _FilteredRow(event(values), head)

            return row

        def snapshot_stream_rows(_cursor: Any) -> RowMaker[Any]:
            # snapshot_and_stream's rows: its first (kind 0) as loaded, then events
            def row(values: Sequence[Any]) -> Any:
                return event(values[SNAPSHOT_AND_STREAM_EVENT_AT:]) if values[0] else values

            return row

        self._event = event
        self.event = event
        """An event from the columns of ``_schema._EVENT_COLUMNS``."""
        self._event_rows = event_rows
        self._filtered_rows = filtered_rows
        self._snapshot_stream_rows = snapshot_stream_rows

    async def read_stream(  # noqa: PLR0913 - the base class's read options
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        *,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
        rules: bool = False,
    ) -> list[RecordedEvent]:
        """A stream's events in the range asked for (the base class checked the arguments).

        ``rules``: without what the stream's deletes and retention rules hide.
        """
        stmt = self._sql.hot.read_stream[self._sql.read_stream[backwards, as_of_us is not None]]
        params = {
            "stream_id": stream_id,
            "from": from_version,
            "to": NO_LIMIT if to_version is None else to_version,
            "as_of": as_of_us,
            "limit": limit,
            "rules": rules,
        }

        async def op(conn: Conn) -> list[RecordedEvent]:
            return await self._prepared.rows(conn, stmt, params, self._event)

        return await self._db.run(f"read_stream({stream_id!r})", op)

    async def stream_version(self, stream_id: str) -> int:
        """The version of the stream's last event (0: no such stream)."""

        async def op(conn: Conn) -> int:
            async with conn.cursor(row_factory=_version_rows) as cur:
                await cur.execute(self._sql.stream_version, [stream_id], prepare=True, binary=True)
                row = await cur.fetchone()
            return row.version if row else 0

        return await self._db.run(f"stream_version({stream_id!r})", op)

    async def read_all(self, after: Checkpoint, limit: int, event_types: tuple[str, ...] | None) -> LogPage:
        """A page of the global log after ``after``, below the read horizon."""
        params: dict[str, Any] = {"tx": str(after.tx), "position": after.position, "limit": limit}
        if event_types is None:
            return await self._page(params, after)
        params["types"] = list(event_types)
        return await self._filtered_page(params, after, limit)

    async def _page(self, params: dict[str, Any], after: Checkpoint) -> LogPage:
        async def op(conn: Conn) -> list[RecordedEvent]:
            async with conn.cursor(row_factory=self._event_rows) as cur:
                await cur.execute(self._sql.read_all, params, prepare=True, binary=True)
                return await cur.fetchall()

        events = await self._db.run("read_all", op)
        # A full page ends at its last event; a short one read everything
        # below the horizon, so its last event is the head of the readable log.
        return LogPage(events, events[-1].checkpoint if events else after)

    async def _filtered_page(
        self, params: dict[str, Any], after: Checkpoint, limit: int, statement: bytes | None = None
    ) -> LogPage:
        stmt = self._sql.read_all_filtered if statement is None else statement

        async def op(conn: Conn) -> list[_FilteredRow]:
            async with conn.cursor(row_factory=self._filtered_rows) as cur:
                await cur.execute(stmt, params, prepare=True, binary=True)
                return await cur.fetchall()

        rows = await self._db.run("read_all", op)
        if not rows:  # nothing at all below the horizon yet
            return LogPage([], after)
        events = [r.event for r in rows if r.event is not None]
        if len(events) == limit:
            return LogPage(events, events[-1].checkpoint)
        # Short page: every event below the horizon was scanned, matching or not.
        # Continue after the last of them; never before `after` (a caller may
        # hold a checkpoint ahead of what is readable yet).
        return LogPage(events, max(rows[0].head, after))

    async def read_category(self, lower: str, upper: str | None, after: Checkpoint, limit: int) -> LogPage:
        """A page of the events of the streams with ids in [lower, upper), below the read horizon."""
        params: dict[str, Any] = {
            "tx": str(after.tx),
            "position": after.position,
            "limit": limit,
            "lower": lower,
            "upper": upper,
        }
        return await self._filtered_page(params, after, limit, self._sql.read_category)

    async def list_streams(
        self, lower: str, upper: str | None, after: str | None, limit: int
    ) -> list[StreamInfo]:
        """Up to ``limit`` streams with ids in [lower, upper) after ``after``, by id."""
        params = {"lower": lower, "upper": upper, "after": after, "limit": limit}

        async def op(conn: Conn) -> list[_StreamRow]:
            async with conn.cursor(row_factory=_stream_rows) as cur:
                await cur.execute(self._sql.list_streams, params, prepare=True, binary=True)
                return await cur.fetchall()

        rows = await self._db.run("list_streams", op)
        return [
            StreamInfo(r.stream_id, r.version, r.position, micros_to_datetime(r.recorded_us)) for r in rows
        ]

    async def get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        """The readable event with this id, if there is one."""

        async def op(conn: Conn) -> RecordedEvent | None:
            async with conn.cursor(row_factory=self._event_rows) as cur:
                await cur.execute(self._sql.get_event, [event_id], prepare=True, binary=True)
                return await cur.fetchone()

        return await self._db.run(f"get_event({event_id})", op)

    async def counts(self) -> tuple[int, int]:
        """How many readable events there are, and streams whose last readable event is no delete."""

        async def op(conn: Conn) -> tuple[int, int]:
            async with conn.cursor() as cur:
                await cur.execute(self._sql.counts, prepare=True, binary=True)
                row = await cur.fetchone()
            return (0, 0) if row is None else (int(row[0]), int(row[1]))

        return await self._db.run("counts", op)

    async def head(self) -> Checkpoint:
        """The checkpoint of the last readable event (START: none yet)."""

        async def op(conn: Conn) -> Checkpoint:
            async with conn.cursor(row_factory=_checkpoint_rows) as cur:
                await cur.execute(self._sql.head, prepare=True, binary=True)
                row = await cur.fetchone()
            return START if row is None else row

        return await self._db.run("head", op)

    async def checkpoint_at(self, position: int) -> Checkpoint | None:
        """The checkpoint of the readable event at ``position`` (None: no such event readable yet)."""

        async def op(conn: Conn) -> Checkpoint | None:
            async with conn.cursor(row_factory=_tx_rows) as cur:
                await cur.execute(self._sql.checkpoint_at, [position], prepare=True, binary=True)
                row = await cur.fetchone()
            return None if row is None else Checkpoint(row.tx, position)

        return await self._db.run(f"checkpoint_at({position})", op)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a newer one of its stream and schema version is stored."""
        params = [
            snapshot.stream_id,
            snapshot.schema_version,
            snapshot.stream_version,
            snapshot.state,
            snapshot.created_at,
        ]

        async def op(conn: Conn) -> None:
            await conn.execute(self._sql.save_snapshot, params)

        # Saving the same snapshot twice is harmless, so a lost connection is
        # simply retried like a read.
        await self._db.run(f"save_snapshot({snapshot.stream_id!r})", op)

    async def lifecycle(self, stream_id: str) -> StreamLifecycle:
        """The stream's version, deletes and retention rules (a stream never written has none)."""

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            async with conn.cursor() as cur:
                await cur.execute(self._sql.lifecycle, [stream_id], prepare=True, binary=True)
                return await cur.fetchone()

        row = await self._db.run(f"stream_lifecycle({stream_id!r})", op)
        return _lifecycle_of(stream_id, row)

    async def snapshot_and_stream(
        self, stream_id: str, schema_version: int, to_version: int | None
    ) -> tuple[StreamLifecycle, Snapshot | None, list[RecordedEvent]]:
        """The stream's lifecycle, its snapshot at or below ``to_version`` and every event after it.

        One statement, one round trip; the events are all those after the
        snapshot (from version 1 without one), whatever the stream's rules.
        """
        params = {
            "stream_id": stream_id,
            "schema_version": schema_version,
            "to": NO_LIMIT if to_version is None else to_version,
        }

        async def op(conn: Conn) -> list[Any]:
            async with conn.cursor(row_factory=self._snapshot_stream_rows) as cur:
                await cur.execute(self._sql.snapshot_and_stream, params, prepare=True, binary=True)
                return await cur.fetchall()

        head, *events = await self._db.run(f"load_snapshot_and_stream({stream_id!r})", op)
        life = _lifecycle_of(stream_id, None if head[1] is None else head[1:7])
        version, state, created_at = head[7:SNAPSHOT_AND_STREAM_EVENT_AT]
        if version is None:
            return life, None, events
        snap = Snapshot(stream_id, version, schema_version, bytes(state), created_at.astimezone(UTC))
        return life, snap, events

    async def load_snapshot(self, stream_id: str, schema_version: int) -> Snapshot | None:
        """The stored snapshot of ``stream_id`` at ``schema_version``, if there is one."""

        async def op(conn: Conn) -> _SnapshotRow | None:
            async with conn.cursor(row_factory=_snapshot_rows) as cur:
                await cur.execute(self._sql.load_snapshot, [stream_id, schema_version], binary=True)
                return await cur.fetchone()

        row = await self._db.run(f"load_snapshot({stream_id!r})", op)
        if row is None:
            return None
        return Snapshot(
            stream_id, row.stream_version, schema_version, bytes(row.state), row.created_at.astimezone(UTC)
        )

    async def list_snapshots(
        self, prefix: str | None, stream_id: str | None, limit: int
    ) -> list[SnapshotInfo]:
        """The snapshots of the streams starting with ``prefix`` (or of ``stream_id``), without states."""
        params = {"prefix": prefix, "stream_id": stream_id, "limit": limit}

        async def op(conn: Conn) -> list[SnapshotInfo]:
            async with conn.cursor(row_factory=_snapshot_info_rows) as cur:
                await cur.execute(self._sql.list_snapshots, params, binary=True)
                return await cur.fetchall()

        found = await self._db.run("list_snapshots", op)
        return [
            SnapshotInfo(
                i.stream_id, i.schema_version, i.stream_version, i.size, i.created_at.astimezone(UTC)
            )
            for i in found
        ]

    async def drop_snapshots(self, prefix: str | None, stream_id: str | None) -> int:
        """Delete the snapshots chosen; how many there were."""
        params = {"prefix": prefix, "stream_id": stream_id}

        async def op(conn: Conn) -> int:
            cur = await conn.execute(self._sql.drop_snapshots, params)
            return cur.rowcount

        # Deleting again deletes nothing more: a lost connection is retried like a read.
        return await self._db.run("drop_snapshots", op)

    async def horizon_lag(self) -> HorizonLag:
        """How many committed events readers cannot see yet, and the event writer holding them back."""

        async def op(conn: Conn) -> HorizonLag | None:
            async with conn.cursor(row_factory=_lag_rows) as cur:
                await cur.execute(self._sql.horizon_lag)
                return await cur.fetchone()

        lag = await self._db.run("read_horizon_lag", op)
        if lag is None:  # pragma: no cover - the query always returns one row
            return HorizonLag(0, None, None, None, None)
        return lag


def _lifecycle_of(stream_id: str, row: Sequence[Any] | None) -> StreamLifecycle:
    """A stream's lifecycle from the columns of ``Statements.lifecycle`` (None: no row, never written)."""
    if row is None:
        return StreamLifecycle(stream_id)
    version, deleted, tombstoned, before, max_count, max_age_us = row
    return StreamLifecycle(
        stream_id,
        version,
        deleted,
        tombstoned,
        before,
        max_count,
        None if max_age_us is None else timedelta(microseconds=max_age_us),
    )
