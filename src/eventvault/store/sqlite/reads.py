"""The store's reads: statements and what their rows become, each on a cursor given.

Where a read runs (the caller's thread, a reader thread, the writer's) is the
store's business (core.py); these functions only read.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final, NamedTuple

from eventvault.store.codec import EventCodec
from eventvault.store.records import Checkpoint, LogPage, RecordedEvent

MAX_INT: Final = 2**63 - 1
"""SQLite's largest integer: versions, positions and limits past it are clamped or refused."""

# The columns of an event, in the order of RecordedEvent's parameters after the
# codec, so that a row becomes an event as RecordedEvent(codec, *row).
EVENT_COLUMNS: Final = (
    "event_id, stream_id, stream_version, position, event_type, schema_version, "
    "occurred_at, recorded_at, data, metadata"
)

SQL_HEAD: Final = "SELECT max(position) FROM events"
SQL_VERSION: Final = "SELECT max(stream_version) FROM events WHERE stream_id = ?"
_SQL_STREAM: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version BETWEEN ?2 AND ?3 "  # noqa: S608
    "ORDER BY stream_version {order} LIMIT ?4"
)
# as_of: the prefix of the stream up to the last event recorded by then (not
# "the events recorded by then": after a clock step back, that is not a prefix).
_SQL_STREAM_AS_OF: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version BETWEEN ?2 AND ?3 "  # noqa: S608
    "AND stream_version <= (SELECT coalesce(max(stream_version), 0) FROM events "
    "WHERE stream_id = ?1 AND recorded_at <= ?5) "
    "ORDER BY stream_version {order} LIMIT ?4"
)
SQL_STREAM_FWD: Final = _SQL_STREAM.format(order="ASC")
SQL_STREAM_BACK: Final = _SQL_STREAM.format(order="DESC")
SQL_STREAM_AS_OF_FWD: Final = _SQL_STREAM_AS_OF.format(order="ASC")
SQL_STREAM_AS_OF_BACK: Final = _SQL_STREAM_AS_OF.format(order="DESC")
_SQL_LOG: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"  # noqa: S608
_SQL_LOAD_SNAPSHOT: Final = (
    "SELECT stream_version, state, created_at FROM snapshots WHERE stream_id = ? AND schema_version = ?"
)


class StoredSnapshot(NamedTuple):
    """A ``snapshots`` row, without the key it was looked up by."""

    stream_version: int
    state: bytes
    created_us: int


def stream_events(
    cur: sqlite3.Cursor, codec: EventCodec, sql: str, params: tuple[Any, ...]
) -> list[RecordedEvent]:
    """The events of one of the SQL_STREAM_* statements."""
    return [RecordedEvent(codec, *row) for row in cur.execute(sql, params)]


def stream_version(cur: sqlite3.Cursor, stream_id: str) -> int:
    """The stream's version; 0 if it has no events."""
    return int(cur.execute(SQL_VERSION, (stream_id,)).fetchone()[0] or 0)


def head(cur: sqlite3.Cursor) -> int:
    """The last position in the log; 0 if it is empty."""
    return int(cur.execute(SQL_HEAD).fetchone()[0] or 0)


def log_page(
    cur: sqlite3.Cursor, codec: EventCodec, after: int, limit: int, event_types: tuple[str, ...] | None
) -> LogPage:
    """Up to ``limit`` events after position ``after`` (of ``event_types`` only, if given)."""
    if event_types is None:
        events = [RecordedEvent(codec, *row) for row in cur.execute(_SQL_LOG, (after, limit))]
        if len(events) == limit:
            return LogPage(events, Checkpoint(0, events[-1].position))
        # The page reached the head; it is the last event's position (the same
        # statement saw everything after `after`), or `after` itself.
        return LogPage(events, Checkpoint(0, max(after, events[-1].position if events else 0)))
    types = ", ".join("?" * len(event_types))
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? "  # noqa: S608 - placeholders only
        f"AND event_type IN ({types}) ORDER BY position LIMIT ?"
    )
    # One read transaction for the page and the head: the checkpoint must move
    # past filtered-out events, but never past an event this snapshot did not see.
    cur.execute("BEGIN")
    events = [RecordedEvent(codec, *row) for row in cur.execute(sql, (after, *event_types, limit))]
    if len(events) == limit:
        checkpoint = Checkpoint(0, events[-1].position)
    else:
        checkpoint = Checkpoint(0, max(after, head(cur)))
    cur.execute("COMMIT")
    return LogPage(events, checkpoint)


def load_snapshot(cur: sqlite3.Cursor, stream_id: str, schema_version: int) -> StoredSnapshot | None:
    """The stored snapshot of ``stream_id`` at ``schema_version``, if there is one."""
    row = cur.execute(_SQL_LOAD_SNAPSHOT, (stream_id, schema_version)).fetchone()
    return None if row is None else StoredSnapshot(*row)


def snapshot_and_stream(  # noqa: PLR0913, PLR0917 - one read, every part of it
    cur: sqlite3.Cursor, codec: EventCodec, stream_id: str, schema_version: int, upper: int, limit: int
) -> tuple[StoredSnapshot | None, list[RecordedEvent]]:
    """The snapshot (if at or below ``upper``) and up to ``limit`` events after it, to ``upper``."""
    snapshot = load_snapshot(cur, stream_id, schema_version)
    if snapshot is not None and snapshot.stream_version > upper:
        snapshot = None  # past the version asked for: replay from the start instead
    start = 1 if snapshot is None else snapshot.stream_version + 1
    if upper < start:
        return snapshot, []
    return snapshot, stream_events(cur, codec, SQL_STREAM_FWD, (stream_id, start, upper, limit))


# A category read: a range of the UNIQUE (stream_id, stream_version) index (the
# ids that start with the prefix), in log order. A TEXT value sorts before any
# BLOB, so a prefix with no upper bound is given an empty BLOB as its end.
# `+position` keeps the planner off the rowid: walking the whole log from the
# checkpoint is what this read exists to avoid.
SQL_CATEGORY: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id >= ?1 AND stream_id < ?2 "  # noqa: S608
    "AND +position > ?3 ORDER BY +position LIMIT ?4"
)
# Streams in order of their ids: one index seek per stream (the next id after
# the previous one), then its last event, so a page costs its length, not the log.
SQL_LIST_STREAMS: Final = """
    WITH RECURSIVE ids(id) AS (
        SELECT min(stream_id) FROM events WHERE stream_id >= ?1 AND stream_id > ?3 AND stream_id < ?2
        UNION ALL
        SELECT (SELECT min(stream_id) FROM events WHERE stream_id > ids.id AND stream_id < ?2)
        FROM ids WHERE ids.id IS NOT NULL LIMIT ?4 + 1
    )
    SELECT e.stream_id, e.stream_version, e.position, e.recorded_at
    FROM ids JOIN events AS e ON e.stream_id = ids.id
        AND e.stream_version = (SELECT max(stream_version) FROM events WHERE stream_id = ids.id)
    ORDER BY e.stream_id LIMIT ?4
"""
SQL_GET_EVENT: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?"  # noqa: S608
SQL_COUNTS: Final = (
    "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT stream_id FROM events)), "
    "coalesce(max(position), 0) FROM events"
)


def category_page(  # noqa: PLR0913, PLR0917 - one read, every part of it
    cur: sqlite3.Cursor, codec: EventCodec, lower: str, upper: str | bytes, after: int, limit: int
) -> LogPage:
    """Up to ``limit`` events after ``after`` of the streams with ids in [lower, upper)."""
    # One read transaction for the page and the head, as in a filtered log_page.
    cur.execute("BEGIN")
    rows = cur.execute(SQL_CATEGORY, (lower, upper, after, limit))
    events = [RecordedEvent(codec, *row) for row in rows]
    if len(events) == limit:
        checkpoint = Checkpoint(0, events[-1].position)
    else:
        checkpoint = Checkpoint(0, max(after, head(cur)))
    cur.execute("COMMIT")
    return LogPage(events, checkpoint)


def list_streams(
    cur: sqlite3.Cursor, lower: str, upper: str | bytes, after: str, limit: int
) -> list[tuple[str, int, int, int]]:
    """(stream id, version, last position, last recorded time) of up to ``limit`` streams."""
    return cur.execute(SQL_LIST_STREAMS, (lower, upper, after, limit)).fetchall()


def get_event(cur: sqlite3.Cursor, codec: EventCodec, event_id: bytes) -> RecordedEvent | None:
    """The event with this id (its 16 bytes), if stored."""
    row = cur.execute(SQL_GET_EVENT, (event_id,)).fetchone()
    return None if row is None else RecordedEvent(codec, *row)


def counts(cur: sqlite3.Cursor) -> tuple[int, int, int]:
    """(events, streams, head position), from one read."""
    events, streams, last = cur.execute(SQL_COUNTS).fetchone()
    return int(events), int(streams), int(last)


# Snapshots of a range of stream ids (or of one stream), by their primary key.
_SNAPSHOTS_WHERE: Final = "stream_id >= ?1 AND stream_id < ?2 AND (?3 IS NULL OR stream_id = ?3)"
SQL_LIST_SNAPSHOTS: Final = (
    "SELECT stream_id, schema_version, stream_version, length(state), created_at FROM snapshots "  # noqa: S608
    f"WHERE {_SNAPSHOTS_WHERE} ORDER BY stream_id, schema_version LIMIT ?4"
)
SQL_DROP_SNAPSHOTS: Final = f"DELETE FROM snapshots WHERE {_SNAPSHOTS_WHERE}"  # noqa: S608


def list_snapshots(
    cur: sqlite3.Cursor, lower: str, upper: str | bytes, stream_id: str | None, limit: int
) -> list[tuple[str, int, int, int, int]]:
    """(stream id, schema version, stream version, state size, created time) of the snapshots chosen."""
    return cur.execute(SQL_LIST_SNAPSHOTS, (lower, upper, stream_id, limit)).fetchall()


def drop_snapshots(cur: sqlite3.Cursor, lower: str, upper: str | bytes, stream_id: str | None) -> int:
    """Delete the snapshots chosen (on the writer); how many there were."""
    return cur.execute(SQL_DROP_SNAPSHOTS, (lower, upper, stream_id)).rowcount
