"""Stream deletes: the ``$StreamDeleted`` event, carrying its stream's tags, under the appenders' locks.

A delete is one transaction on a pooled connection. It is an event writer (the
read horizon waits for it), and its event carries the tags of the stream's
events (decision 35), so it takes what every writer of tagged events takes,
in the same order: the writers' lock shared, the tags' advisory locks shared
(a conditional append checking one of them holds it exclusive), then the
stream's row. A condition on those tags and the delete therefore never check
and write past each other. The tags are read before their locks are taken and
again under the row's lock, after which no append can change them; if an
append brought new ones in between, the delete starts again, locking them too.
"""

from __future__ import annotations

import time
from typing import Any, Final

import psycopg
from psycopg import sql

from eventvault.errors import StoreError, StreamDeleted
from eventvault.store.base import check_version_matches, deletion_marker
from eventvault.store.postgres._connections import Conn, Connections
from eventvault.store.postgres._schema import Statements, tag_key
from eventvault.store.records import AppendResult, Checkpoint, ExpectedVersion

_ROUNDS: Final = 5
"""Times a delete starts again when appends bring its stream new tags while it takes their locks."""

Cursor = psycopg.AsyncCursor[Any]


class _TagsMoved(Exception):
    """The stream's events carry tags the delete did not lock: it starts again, locking them."""


class _Row:
    """The stream's row as the delete found (or made) it, under its lock."""

    __slots__ = ("deleted", "made", "tombstoned", "version")

    def __init__(self, version: int, deleted: int, tombstoned: bool, *, made: bool) -> None:
        self.version = version
        self.deleted = deleted
        self.tombstoned = tombstoned
        self.made = made
        """Made by this delete (a tombstone of an unused id): already at the tombstone's version."""


class Deletes:
    """:meth:`EventStore.delete_stream` on PostgreSQL."""

    def __init__(self, db: Connections, statements: Statements, schema: str) -> None:
        self._db = db
        self._schema = schema
        s = sql.Identifier(schema)
        self._declare = statements.declare_writer
        # The tags of the stream's events, in the order they first appear (oldest
        # event first): one range of (stream_id, stream_version).
        self._tags = sql.SQL(
            "SELECT t.tag FROM {s}.events AS e "
            "CROSS JOIN LATERAL unnest(e.tags) WITH ORDINALITY AS t(tag, i) "
            "WHERE e.stream_id = %s GROUP BY t.tag ORDER BY min(ARRAY[e.stream_version, t.i])"
        ).format(s=s)
        self._lock_tags = sql.SQL("SELECT {s}.dcb_lock(false, %s::int8[], %s::bool[])").format(s=s)
        self._lock_row = sql.SQL(
            "SELECT version, deleted_version, tombstoned FROM {s}.streams WHERE stream_id = %s FOR UPDATE"
        ).format(s=s)
        self._new_row = sql.SQL(
            "INSERT INTO {s}.streams (stream_id, version, deleted_version, tombstoned) "
            "VALUES (%s, 1, 1, true) ON CONFLICT (stream_id) DO NOTHING RETURNING version"
        ).format(s=s)
        self._mark = sql.SQL(
            "UPDATE {s}.streams SET version = %s, deleted_version = %s, tombstoned = %s WHERE stream_id = %s"
        ).format(s=s)
        self._insert = sql.SQL(
            "INSERT INTO {s}.events (event_id, stream_id, stream_version, event_type, schema_version, "
            "occurred_us, recorded_us, data, metadata, tags) VALUES (%s, %s, %s, %s, %s, %s, "
            "(extract(epoch FROM clock_timestamp()) * 1000000)::int8, %s, %s, %s::text[]) "
            "RETURNING position, tx_id::text::int8"
        ).format(s=s)
        self._tag_rows = sql.SQL(
            "INSERT INTO {s}.event_tags (tag, tx_id, position) "
            "SELECT t.tag, pg_current_xact_id(), %s FROM unnest(%s::text[]) AS t(tag)"
        ).format(s=s)
        self._drop = sql.SQL("DELETE FROM {s}.snapshots WHERE stream_id = %s").format(s=s)

    async def delete(self, stream_id: str, expected: ExpectedVersion, tombstone: bool) -> AppendResult | None:
        """Delete the stream as :meth:`EventStore._delete_stream` says: the $StreamDeleted result, or None."""

        async def op(conn: Conn) -> AppendResult | None:
            for _round in range(_ROUNDS):
                try:
                    return await self._once(conn, stream_id, expected, tombstone)
                except _TagsMoved:
                    continue
            raise StoreError(
                f"delete of {stream_id!r}: appends brought its events new tags {_ROUNDS} times while it ran"
            )

        return await self._db.run(f"delete_stream({stream_id!r})", op, writes=True)

    async def _once(
        self, conn: Conn, stream_id: str, expected: ExpectedVersion, tombstone: bool
    ) -> AppendResult | None:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(self._declare)  # an event writer: the read horizon waits for it
            locked = await self._stored_tags(cur, stream_id)
            if locked:
                keys = sorted({tag_key(self._schema, t) for t in locked})
                shared = "{" + ",".join("f" * len(keys)) + "}"
                await cur.execute(self._lock_tags, ["{" + ",".join(map(str, keys)) + "}", shared])
            row = await self._row(cur, stream_id, expected, tombstone)
            if row is None:
                return None
            if row.tombstoned:
                raise StreamDeleted(stream_id)
            visible = 0 if row.version == row.deleted else row.version
            check_version_matches(stream_id, expected, visible)
            if visible == 0 and not tombstone:
                return None
            # Under the row's lock no append changes the stream's tags any more.
            tags = [] if row.made else await self._stored_tags(cur, stream_id)
            if not set(tags) <= set(locked):
                raise _TagsMoved
            return await self._write(cur, stream_id, row, tombstone, tags)

    async def _stored_tags(self, cur: Cursor, stream_id: str) -> list[str]:
        await cur.execute(self._tags, [stream_id])
        return [tag for (tag,) in await cur.fetchall()]

    async def _row(
        self, cur: Cursor, stream_id: str, expected: ExpectedVersion, tombstone: bool
    ) -> _Row | None:
        """The stream's row, locked; one made for a tombstone of an unused id; None: nothing to delete."""
        while True:
            await cur.execute(self._lock_row, [stream_id])
            found = await cur.fetchone()
            if found is not None:
                version, deleted, tombstoned = found
                return _Row(version, deleted, tombstoned, made=False)
            # No row: the stream has no events (and no rules).
            check_version_matches(stream_id, expected, 0)
            if not tombstone:
                return None
            await cur.execute(self._new_row, [stream_id])
            if await cur.fetchone() is not None:
                return _Row(0, 0, tombstoned=False, made=True)
            # A first append made the row meanwhile: look again, under its lock.

    async def _write(
        self, cur: Cursor, stream_id: str, row: _Row, tombstone: bool, tags: list[str]
    ) -> AppendResult:
        """Mark the row deleted, insert the $StreamDeleted event with its tags, drop the snapshots."""
        version = row.version
        e = deletion_marker(stream_id, version, tombstone, time.time_ns() // 1000, tags)
        if not row.made:  # (a row of rules only is at version 0: it is marked too)
            await cur.execute(self._mark, [version + 1, version + 1, tombstone, stream_id])
        await cur.execute(
            self._insert,
            [
                e.event_id,
                stream_id,
                version + 1,
                e.event_type,
                e.schema_version,
                e.occurred_us,
                e.payload,
                e.metadata,
                list(e.tags),
            ],
        )
        inserted = await cur.fetchone()
        assert inserted is not None  # noqa: S101 - an INSERT ... RETURNING of one row
        position, tx = inserted
        if e.tags:
            await cur.execute(self._tag_rows, [position, list(e.tags)])
        await cur.execute(self._drop, [stream_id])
        return AppendResult(stream_id, version + 1, (position,), Checkpoint(tx, position))
