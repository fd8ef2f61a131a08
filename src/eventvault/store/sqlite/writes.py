"""The store's writes, each on the write connection's cursor inside the writer's transaction.

Which transaction, on which thread, and who learns the outcome is the writer's
business (writer.py); these functions only write, and read what a write must
check.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, cast

from eventvault.errors import (
    AppendConditionFailed,
    EventVaultError,
    StoreError,
    StreamDeleted,
    WrongExpectedVersion,
)
from eventvault.store.base import (
    Found,
    PreparedEvent,
    deletion_marker,
    idempotent_result,
    stream_tags,
    version_holds,
)
from eventvault.store.records import AppendCondition, AppendResult, Checkpoint, ExpectedVersion
from eventvault.store.sqlite.reads import MAX_INT, SQL_HEAD, SQL_WRITE_STATE, first_match
from eventvault.store.sqlite.schema import TAG_SEPARATOR

IN_CHUNK: Final = 500  # bound parameters per IN (...) list, well under every SQLite's limit
_EMPTY_META: Final = b"{}"

_SQL_INSERT: Final = (
    "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
    "schema_version, occurred_at, recorded_at, data, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_TAGGED: Final = (
    "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, "
    "occurred_at, recorded_at, data, metadata, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_TAG: Final = "INSERT INTO event_tags (tag, position) VALUES (?, ?)"
_SQL_LAST_POSITION: Final = "SELECT last_insert_rowid()"
SQL_SAVE_SNAPSHOT: Final = (
    "INSERT INTO snapshots (stream_id, schema_version, stream_version, state, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id, schema_version) DO UPDATE SET "
    "stream_version = excluded.stream_version, state = excluded.state, created_at = excluded.created_at "
    "WHERE excluded.stream_version >= snapshots.stream_version"
)


class Append(NamedTuple):
    """What one append writes: the arguments of :func:`write_append` after the cursor."""

    stream_id: str
    events: list[PreparedEvent]
    expected: ExpectedVersion
    condition: AppendCondition | None = None
    """Checked in the append's own transaction, after its expected version."""
    tagged: bool = False
    """Some of ``events`` carry tags (to store in events.tags and event_tags)."""


class Conflict(Exception):
    """An append hit a conflict; decided (by :func:`decide_conflict`) after its writes are rolled back."""

    def __init__(
        self,
        append: Append,
        mismatch: EventVaultError | None,
        integrity: sqlite3.IntegrityError | None = None,
    ) -> None:
        self.append = append
        self.mismatch = mismatch
        self.integrity = integrity


def event_rows(
    stream_id: str, version: int, events: Sequence[PreparedEvent], now: int
) -> list[tuple[Any, ...]]:
    """The ``events`` table rows of an append to ``stream_id``, which is at ``version``."""
    return [
        (
            e.event_id.bytes,
            stream_id,
            version + i,
            e.event_type,
            e.schema_version,
            e.occurred_us,
            now,
            e.payload,
            None if e.metadata == _EMPTY_META else e.metadata,
        )
        for i, e in enumerate(events, start=1)
    ]


def tagged_rows(
    stream_id: str, version: int, events: Sequence[PreparedEvent], now: int
) -> list[tuple[Any, ...]]:
    """:func:`event_rows` with each event's tags joined, NULL for none (``_SQL_INSERT_TAGGED``)."""
    return [
        (*row, TAG_SEPARATOR.join(e.tags) if e.tags else None)
        for row, e in zip(event_rows(stream_id, version, events, now), events, strict=True)
    ]


def write_append(cur: sqlite3.Cursor, append: Append, now: int) -> AppendResult:
    """Insert ``append``'s events, recorded at ``now`` (us).

    Raises Conflict if its expected version or its condition does not hold, or
    its rows break a constraint.
    """
    stream_id, events, expected = append.stream_id, append.events, append.expected
    version, deleted, tombstoned = cur.execute(SQL_WRITE_STATE, (stream_id,)).fetchone()
    version = version or 0
    if tombstoned:
        raise Conflict(append, StreamDeleted(stream_id))
    visible = 0 if deleted and deleted == version else version
    if visible != expected and not version_holds(expected, visible):
        raise Conflict(append, WrongExpectedVersion(stream_id, expected, visible))
    if append.tagged or append.condition is not None:
        return _write_dcb(cur, append, version, now)
    n = len(events)
    try:
        if n == 1:
            cur.execute(_SQL_INSERT, event_rows(stream_id, version, events, now)[0])
            last = cast("int", cur.lastrowid)  # set by every INSERT
        else:
            cur.executemany(_SQL_INSERT, event_rows(stream_id, version, events, now))
            # The rows of one executemany under the write lock got consecutive
            # rowids (each max + 1), so the last one fixes them all.
            last = cur.execute(_SQL_LAST_POSITION).fetchone()[0]
    except sqlite3.IntegrityError as exc:
        raise Conflict(append, None, exc) from None
    return AppendResult(stream_id, version + n, tuple(range(last - n + 1, last + 1)), Checkpoint(0, last))


def _write_dcb(cur: sqlite3.Cursor, append: Append, version: int, now: int) -> AppendResult:
    """The rest of :func:`write_append` for an append with a condition or tags.

    The condition is checked here, in the transaction that inserts: with one
    writer, nothing can be stored between the check and the insert.
    """
    stream_id, events, condition = append.stream_id, append.events, append.condition
    if condition is not None:
        after = condition.after or 0
        conflict = None if after >= MAX_INT else first_match(cur, condition.fail_if_events_match, after)
        if conflict is not None:
            raise Conflict(
                append, AppendConditionFailed(condition.fail_if_events_match, condition.after, conflict)
            )
    n = len(events)
    try:
        cur.executemany(_SQL_INSERT_TAGGED, tagged_rows(stream_id, version, events, now))
        last = cur.execute(_SQL_LAST_POSITION).fetchone()[0]
        first = last - n + 1
        tags = [(t, first + i) for i, e in enumerate(events) for t in e.tags]
        if tags:
            cur.executemany(_SQL_INSERT_TAG, tags)
    except sqlite3.IntegrityError as exc:
        raise Conflict(append, None, exc) from None
    return AppendResult(stream_id, version + n, tuple(range(first, last + 1)), Checkpoint(0, last))


def append_together(cur: sqlite3.Cursor, appends: Sequence[Append], now: int) -> list[AppendResult] | None:
    """Appends that all hold, with a few statements in all; None (nothing written): go one by one.

    Under load a batch is mostly appends to different streams, all at the
    versions their writers expect. Their stream versions are read with one
    query and all their rows inserted with one statement, so the writer's
    work (and its trips in and out of SQLite, each of which must win the
    GIL back) hardly grows with the batch. A batch with anything else in it
    (a version that does not hold, which needs the idempotency check; an
    event id twice) returns None before writing anything; so does one whose
    insert breaks a constraint, after the transaction is rolled back and begun
    again.
    """
    seen: set[uuid.UUID] = set()
    for append in appends:
        if append.tagged or append.condition is not None:
            return None  # its condition is checked (and its tags stored) by write_append
        for e in append.events:
            if e.event_id in seen:
                return None
            seen.add(e.event_id)
    versions = stream_versions(cur, {a.stream_id for a in appends})
    if closed_streams(cur, set(versions)):
        return None  # a deleted stream's version reads as 0: write_append knows
    rows: list[tuple[Any, ...]] = []
    ends: list[tuple[str, int, int]] = []  # stream, its new version, events appended
    for stream_id, events, expected, _, _ in appends:
        version = versions[stream_id]
        if not version_holds(expected, version):
            return None
        rows.extend(event_rows(stream_id, version, events, now))
        versions[stream_id] = version + len(events)
        ends.append((stream_id, version + len(events), len(events)))
    try:
        cur.executemany(_SQL_INSERT, rows)
    except sqlite3.IntegrityError:
        # An id stored before: the one-by-one path tells retries from clashes.
        # Rolling back loses nothing but this insert (the rest only read).
        cur.execute("ROLLBACK")
        cur.execute("BEGIN IMMEDIATE")
        return None
    # One INSERT under the write lock numbered its rows max + 1, + 2, ...: the
    # last position fixes them all, in the order of the appends.
    position = cur.execute(_SQL_LAST_POSITION).fetchone()[0] - len(rows)
    results: list[AppendResult] = []
    for stream_id, version, n in ends:
        positions = tuple(range(position + 1, position + n + 1))
        position += n
        results.append(AppendResult(stream_id, version, positions, Checkpoint(0, positions[-1])))
    return results


def stream_versions(cur: sqlite3.Cursor, streams: set[str]) -> dict[str, int]:
    """The current version of each stream (0 for none), a few hundred per query."""
    out: dict[str, int] = {}
    ordered = list(streams)
    for i in range(0, len(ordered), IN_CHUNK):
        chunk = ordered[i : i + IN_CHUNK]
        # A correlated max() per stream is one index seek each; max() with
        # GROUP BY over an IN list would walk every version of every stream.
        sql = (
            f"WITH s(id) AS (VALUES {', '.join(['(?)'] * len(chunk))}) "  # noqa: S608 - placeholders only
            "SELECT id, (SELECT max(stream_version) FROM events WHERE stream_id = s.id) FROM s"
        )
        for stream_id, version in cur.execute(sql, chunk):
            out[stream_id] = version or 0
    return out


def closed_streams(cur: sqlite3.Cursor, streams: set[str]) -> bool:
    """Whether any of ``streams`` was deleted (soft or for ever)."""
    ordered = list(streams)
    for i in range(0, len(ordered), IN_CHUNK):
        chunk = ordered[i : i + IN_CHUNK]
        sql = (
            "SELECT 1 FROM stream_rules WHERE (deleted_version > 0 OR tombstoned) "  # noqa: S608
            f"AND stream_id IN ({', '.join('?' * len(chunk))}) LIMIT 1"
        )
        if cur.execute(sql, chunk).fetchone() is not None:
            return True
    return False


def decide_conflict(cur: sqlite3.Cursor, conflict: Conflict) -> AppendResult:
    """After rolling back: an idempotent retry's first result, or the error to raise."""
    if isinstance(conflict.mismatch, StreamDeleted):
        raise conflict.mismatch  # a tombstone refuses re-sends too
    stream_id, events = conflict.append.stream_id, conflict.append.events
    done = idempotent_result(stream_id, events, find(cur, events))
    if done is not None:
        return done
    if conflict.mismatch is not None:
        raise conflict.mismatch
    raise StoreError(
        f"append to {stream_id!r} broke a constraint with no stored event id to explain it: "
        f"{conflict.integrity}"
    )


def find(cur: sqlite3.Cursor, events: Sequence[PreparedEvent]) -> dict[uuid.UUID, Found]:
    """Where each of ``events``' ids is stored already, if it is."""
    found: dict[uuid.UUID, Found] = {}
    ids = [e.event_id.bytes for e in events]
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i : i + IN_CHUNK]
        sql = (
            "SELECT event_id, stream_id, stream_version, position FROM events "  # noqa: S608 - placeholders only
            f"WHERE event_id IN ({', '.join('?' * len(chunk))})"
        )
        for event_id, stream_id, version, position in cur.execute(sql, chunk):
            found[uuid.UUID(bytes=event_id)] = Found(stream_id, version, position, 0)
    return found


def write_snapshot(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> None:
    """Store a snapshot row unless a newer one of its stream and schema version is stored."""
    cur.execute(SQL_SAVE_SNAPSHOT, row)


_SQL_INSERT_RECORDED: Final = (
    "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, schema_version, "
    "occurred_at, recorded_at, data, metadata, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def write_recorded(
    cur: sqlite3.Cursor,
    rows: list[tuple[Any, ...]],
    tags: list[tuple[str, int]],
    before: dict[str, int],
    deletions: Sequence[tuple[str, int, bool]] = (),
) -> str | None:
    """Insert recorded events as given (rows for ``_SQL_INSERT_RECORDED``) and their tag rows.

    ``before`` is each stream's version the events continue. Both it and the
    head were checked before; they are checked again here, in the transaction
    that inserts, since an append may have landed in between. Returns why not
    (nothing written), or None.
    """
    head = cur.execute(SQL_HEAD).fetchone()[0] or 0
    if head >= rows[0][0]:
        return f"an append moved the head to position {head} meanwhile: positions must rise above it"
    for stream_id, version in stream_versions(cur, set(before)).items():
        if version != before[stream_id]:
            return f"an append moved stream {stream_id!r} to version {version} meanwhile"
    cur.executemany(_SQL_INSERT_RECORDED, rows)
    if tags:
        cur.executemany(_SQL_INSERT_TAG, tags)
    for stream_id, version, tombstone in deletions:  # $StreamDeleted events delete here too
        cur.execute(_SQL_MARK_DELETED, (stream_id, version, int(tombstone)))
        cur.execute(_SQL_DROP_STREAM_SNAPSHOTS, (stream_id,))
    return None


def stored_ids(cur: sqlite3.Cursor, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``event_ids`` are stored."""
    found: set[uuid.UUID] = set()
    for start in range(0, len(event_ids), IN_CHUNK):
        chunk = [i.bytes for i in event_ids[start : start + IN_CHUNK]]
        sql = f"SELECT event_id FROM events WHERE event_id IN ({', '.join('?' * len(chunk))})"  # noqa: S608
        found.update(uuid.UUID(bytes=row[0]) for row in cur.execute(sql, chunk))
    return found


# -- deletes, truncation and retention -----------------------------------------------

_SQL_MARK_DELETED: Final = (
    "INSERT INTO stream_rules (stream_id, deleted_version, tombstoned) VALUES (?, ?, ?) "
    "ON CONFLICT (stream_id) DO UPDATE SET deleted_version = excluded.deleted_version, "
    "tombstoned = excluded.tombstoned"
)
_SQL_DROP_STREAM_SNAPSHOTS: Final = "DELETE FROM snapshots WHERE stream_id = ?"
# The tags of a stream's events, oldest first: a range of (stream_id, stream_version).
_SQL_STREAM_TAGS: Final = (
    "SELECT tags FROM events WHERE stream_id = ? AND tags IS NOT NULL ORDER BY stream_version"
)
_SQL_SET_TRUNCATE: Final = (
    "INSERT INTO stream_rules (stream_id, truncate_before) VALUES (?, ?) "
    "ON CONFLICT (stream_id) DO UPDATE SET truncate_before = excluded.truncate_before"
)
_SQL_SET_RETENTION: Final = (
    "INSERT INTO stream_rules (stream_id, max_count, max_age_us) VALUES (?, ?, ?) "
    "ON CONFLICT (stream_id) DO UPDATE SET max_count = excluded.max_count, max_age_us = excluded.max_age_us"
)
# The events a scavenge removes: below `below` and below the stream's last one.
_REMOVABLE: Final = (
    "FROM events WHERE stream_id = ?1 AND stream_version < ?2 "
    "AND stream_version < (SELECT max(stream_version) FROM events WHERE stream_id = ?1)"
)
_SQL_REMOVABLE_TAGS: Final = f"SELECT position, tags {_REMOVABLE} AND tags IS NOT NULL"
_SQL_REMOVE: Final = f"DELETE {_REMOVABLE}"
_SQL_REMOVE_TAG: Final = "DELETE FROM event_tags WHERE tag = ? AND position = ?"


def write_delete(
    cur: sqlite3.Cursor, stream_id: str, expected: ExpectedVersion, tombstone: bool, now: int
) -> AppendResult | EventVaultError | None:
    """Delete ``stream_id`` (EventStore.delete_stream): its $StreamDeleted result, None, or the error.

    The error is returned, not raised: nothing is written before the checks.
    The $StreamDeleted event carries the tags of the stream's events, with
    their event_tags rows, as any tagged event (decision 35); with one writer,
    no append changes them meanwhile.
    """
    version, deleted, tombstoned = cur.execute(SQL_WRITE_STATE, (stream_id,)).fetchone()
    version = version or 0
    if tombstoned:
        return StreamDeleted(stream_id)
    visible = 0 if deleted and deleted == version else version
    if not version_holds(expected, visible):
        return WrongExpectedVersion(stream_id, expected, visible)
    if visible == 0 and not tombstone:
        return None
    stored = cur.execute(_SQL_STREAM_TAGS, (stream_id,))
    tags = stream_tags(joined.split(TAG_SEPARATOR) for (joined,) in stored)
    marker = deletion_marker(stream_id, version, tombstone, now, tags)
    cur.execute(_SQL_INSERT_TAGGED, tagged_rows(stream_id, version, [marker], now)[0])
    position = cast("int", cur.lastrowid)
    if tags:
        cur.executemany(_SQL_INSERT_TAG, [(tag, position) for tag in tags])
    cur.execute(_SQL_MARK_DELETED, (stream_id, version + 1, int(tombstone)))
    cur.execute(_SQL_DROP_STREAM_SNAPSHOTS, (stream_id,))
    return AppendResult(stream_id, version + 1, (position,), Checkpoint(0, position))


def write_truncate(cur: sqlite3.Cursor, stream_id: str, before: int) -> None:
    """Set the stream's truncate-before mark."""
    cur.execute(_SQL_SET_TRUNCATE, (stream_id, before))


def write_retention(
    cur: sqlite3.Cursor, stream_id: str, max_count: int | None, max_age_us: int | None
) -> None:
    """Set (or clear, with None) the stream's max count and max age."""
    cur.execute(_SQL_SET_RETENTION, (stream_id, max_count, max_age_us))


def remove_events(cur: sqlite3.Cursor, stream_id: str, below: int) -> int:
    """Delete the stream's events below version ``below`` (never its last) and their tag rows."""
    tags = [
        (tag, position)
        for position, joined in cur.execute(_SQL_REMOVABLE_TAGS, (stream_id, below)).fetchall()
        for tag in joined.split(TAG_SEPARATOR)
    ]
    if tags:
        cur.executemany(_SQL_REMOVE_TAG, tags)
    return cur.execute(_SQL_REMOVE, (stream_id, below)).rowcount
