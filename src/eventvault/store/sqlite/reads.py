"""The store's reads: statements and what their rows become, each on a cursor given.

Where a read runs (the caller's thread, a reader thread, the writer's) is the
store's business (core.py); these functions only read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from eventvault.store.codec import EventCodec
from eventvault.store.records import Checkpoint, LogPage, Query, QueryItem, RecordedEvent, SequencedEvents
from eventvault.store.sqlite.schema import TAG_SEPARATOR

MAX_INT: Final = 2**63 - 1
"""SQLite's largest integer: versions, positions and limits past it are clamped or refused."""

# The columns of an event, in the order of RecordedEvent's parameters after the
# codec (tx is always 0 here), so that a row becomes an event as
# RecordedEvent(codec, *row) and then has its stored tags split (recorded()).
EVENT_COLUMNS: Final = (
    "event_id, stream_id, stream_version, position, event_type, schema_version, "
    "occurred_at, recorded_at, data, metadata, 0, tags"
)
_NO_TAGS: Final[tuple[str, ...]] = ()

SQL_HEAD: Final = "SELECT max(position) FROM events"
SQL_VERSION: Final = "SELECT max(stream_version) FROM events WHERE stream_id = ?"
# What an append must know of its stream: its version and whether a delete closed it.
SQL_WRITE_STATE: Final = (
    "SELECT (SELECT max(stream_version) FROM events WHERE stream_id = ?1), "
    "r.deleted_version, r.tombstoned FROM (SELECT 1) LEFT JOIN stream_rules AS r ON r.stream_id = ?1"
)
SQL_LIFECYCLE: Final = (
    "SELECT (SELECT max(stream_version) FROM events WHERE stream_id = ?1), r.deleted_version, "
    "r.tombstoned, r.truncate_before, r.max_count, r.max_age_us "
    "FROM (SELECT 1) LEFT JOIN stream_rules AS r ON r.stream_id = ?1"
)
SQL_RULED_STREAMS: Final = "SELECT stream_id FROM stream_rules ORDER BY stream_id"
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
    return recorded(codec, cur.execute(sql, params))


def recorded(codec: EventCodec, rows: Iterable[Any]) -> list[RecordedEvent]:
    """Rows of EVENT_COLUMNS as events, their tags split (NULL: none)."""
    events = [RecordedEvent(codec, *row) for row in rows]
    for e in events:
        stored: Any = e.tags  # the column as stored, until set here
        e.tags = _NO_TAGS if stored is None else tuple(stored.split(TAG_SEPARATOR))
    return events


def stream_version(cur: sqlite3.Cursor, stream_id: str) -> int:
    """The stream's version; 0 if it has no events."""
    return int(cur.execute(SQL_VERSION, (stream_id,)).fetchone()[0] or 0)


def lifecycle(cur: sqlite3.Cursor, stream_id: str) -> tuple[Any, ...]:
    """(version, deleted version, tombstoned, truncate before, max count, max age us); NULLs: no rules."""
    return tuple(cur.execute(SQL_LIFECYCLE, (stream_id,)).fetchone())


def ruled_streams(cur: sqlite3.Cursor) -> list[str]:
    """The ids of the streams with a delete or a retention rule."""
    return [row[0] for row in cur.execute(SQL_RULED_STREAMS)]


def head(cur: sqlite3.Cursor) -> int:
    """The last position in the log; 0 if it is empty."""
    return int(cur.execute(SQL_HEAD).fetchone()[0] or 0)


def log_page(
    cur: sqlite3.Cursor, codec: EventCodec, after: int, limit: int, event_types: tuple[str, ...] | None
) -> LogPage:
    """Up to ``limit`` events after position ``after`` (of ``event_types`` only, if given)."""
    if event_types is None:
        events = recorded(codec, cur.execute(_SQL_LOG, (after, limit)))
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
    events = recorded(codec, cur.execute(sql, (after, *event_types, limit)))
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
# Whether stream `id` is deleted: its stream_rules row (by primary key; most
# streams have none) says its latest delete is its last version.
_DELETED: Final = (
    "EXISTS (SELECT 1 FROM stream_rules AS r WHERE r.stream_id = {id} AND r.deleted_version > 0 "
    "AND r.deleted_version = (SELECT max(stream_version) FROM events WHERE stream_id = {id}))"
)
# Streams in order of their ids: one index seek per stream (the next id after
# the previous one), then its last event, so a page costs its length, not the log.
# Deleted streams are skipped: n counts the listed ids before each one, so the
# walk stops once the page is full however many deleted ones it passed (each
# costs the seek and a probe of stream_rules, and no event is read).
SQL_LIST_STREAMS: Final = f"""
    WITH RECURSIVE ids(id, n) AS (
        SELECT min(stream_id), 0 FROM events WHERE stream_id >= ?1 AND stream_id > ?3 AND stream_id < ?2
        UNION ALL
        SELECT (SELECT min(stream_id) FROM events WHERE stream_id > ids.id AND stream_id < ?2),
            ids.n + (NOT {_DELETED.format(id="ids.id")})
        FROM ids WHERE ids.id IS NOT NULL AND ids.n < ?4
    )
    SELECT e.stream_id, e.stream_version, e.position, e.recorded_at
    FROM ids JOIN events AS e ON e.stream_id = ids.id
        AND e.stream_version = (SELECT max(stream_version) FROM events WHERE stream_id = ids.id)
    WHERE NOT EXISTS (SELECT 1 FROM stream_rules AS r
        WHERE r.stream_id = ids.id AND r.deleted_version = e.stream_version)
    ORDER BY e.stream_id LIMIT ?4
"""  # noqa: S608 - no input in the text
SQL_GET_EVENT: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?"  # noqa: S608
# The streams: every id in the events' (stream_id, stream_version) index, less
# the deleted ones, found through stream_rules (a row only for streams with a
# delete or a rule), one probe each.
SQL_COUNTS: Final = (
    "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT stream_id FROM events)) - "  # noqa: S608
    f"(SELECT count(*) FROM stream_rules AS d WHERE {_DELETED.format(id='d.stream_id')}), "
    "coalesce(max(position), 0) FROM events"
)


def category_page(  # noqa: PLR0913, PLR0917 - one read, every part of it
    cur: sqlite3.Cursor, codec: EventCodec, lower: str, upper: str | bytes, after: int, limit: int
) -> LogPage:
    """Up to ``limit`` events after ``after`` of the streams with ids in [lower, upper)."""
    # One read transaction for the page and the head, as in a filtered log_page.
    cur.execute("BEGIN")
    events = recorded(codec, cur.execute(SQL_CATEGORY, (lower, upper, after, limit)))
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
    found = recorded(codec, cur.execute(SQL_GET_EVENT, (event_id,)))
    return found[0] if found else None


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


# -- dynamic consistency boundaries -------------------------------------------------


def item_positions(item: QueryItem, after: int) -> tuple[str, list[Any]]:
    """A SELECT of the positions after ``after`` that ``item`` matches (ascending), and its parameters.

    An item with tags walks the (tag, position) key of its first tag from
    ``after`` on, each other tag one seek into the same key; its types (if
    any) one seek into events by rowid. CROSS JOIN keeps event_tags the outer
    loop (SQLite does not reorder it), so the scan is in position order and may
    stop at a LIMIT. An item of types only walks the log itself from ``after``
    (no index on event_type: see the schema).
    """
    if not item.tags:
        if not item.types:
            return "SELECT position FROM events WHERE position > ?", [after]
        types = ", ".join("?" * len(item.types))
        return (
            f"SELECT position FROM events WHERE position > ? AND event_type IN ({types})",  # noqa: S608
            [after, *item.types],
        )
    first, *others = item.tags
    joins = [
        f"CROSS JOIN event_tags t{i} ON t{i}.tag = ? AND t{i}.position = t0.position"
        for i in range(1, len(others) + 1)
    ]
    params: list[Any] = list(others)
    if item.types:
        joins.append(
            "CROSS JOIN events e ON e.position = t0.position "
            f"AND e.event_type IN ({', '.join('?' * len(item.types))})"
        )
        params.extend(item.types)
    sql = f"SELECT t0.position FROM event_tags t0 {' '.join(joins)} WHERE t0.tag = ? AND t0.position > ?"  # noqa: S608
    return sql, [*params, first, after]


def first_match(cur: sqlite3.Cursor, query: Query, after: int) -> int | None:
    """The first position after ``after`` that ``query`` matches, if any (the condition check).

    Each item stops at its first match after ``after``: with tags, one seek
    into event_tags; of types only, a walk of the events stored since
    ``after``. Neither depends on the length of the log.
    """
    found: int | None = None
    for item in query.items:
        sql, params = item_positions(item, after)
        row = cur.execute(f"{sql} ORDER BY 1 LIMIT 1", params).fetchone()
        if row is not None and (found is None or row[0] < found):
            found = row[0]
    return found


def query_page(  # noqa: PLR0913, PLR0917 - one read, every part of it
    cur: sqlite3.Cursor, codec: EventCodec, query: Query, after: int, limit: int, backwards: bool
) -> SequencedEvents:
    """The events ``query`` matches after ``after`` (``limit`` < 0: all), and the head, in one snapshot."""
    order = "DESC" if backwards else "ASC"
    if query.matches_all:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position {order} LIMIT ?"  # noqa: S608
        params: list[Any] = [after, limit]
    else:
        parts = [item_positions(item, after) for item in query.items]
        union = " UNION ".join(sql for sql, _ in parts)
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE position IN ({union}) "  # noqa: S608 - placeholders only
            f"ORDER BY position {order} LIMIT ?"
        )
        params = [p for _, ps in parts for p in ps]
        params.append(limit)
    cur.execute("BEGIN")
    try:
        events = recorded(codec, cur.execute(sql, params))
        position = head(cur)
    finally:
        cur.execute("COMMIT")
    return SequencedEvents(events, position)
