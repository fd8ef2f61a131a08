"""The store: its lifecycle, and each :class:`EventStore` call handed to the part that runs it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from eventvault.domain import EventRegistry
from eventvault.errors import InvalidInput, InvalidStoreURL, StoreClosed
from eventvault.store.base import (
    EventStore,
    PreparedEvent,
    prefix_end,
    recorded_deletions,
    versions_before,
)
from eventvault.store.postgres._appends import Appends
from eventvault.store.postgres._connections import Conn, Connections, reason
from eventvault.store.postgres._dcb import DCB
from eventvault.store.postgres._deletes import Deletes
from eventvault.store.postgres._keys import PostgresKeyStore
from eventvault.store.postgres._libpq import Prepared
from eventvault.store.postgres._live import Notifications
from eventvault.store.postgres._options import parse_options
from eventvault.store.postgres._reads import Reads
from eventvault.store.postgres._schema import migrate, statements
from eventvault.store.records import (
    AppendCondition,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    HorizonLag,
    LogPage,
    Query,
    RecordedEvent,
    SequencedEvents,
    Snapshot,
    SnapshotInfo,
    StoreCounts,
    StreamInfo,
    StreamLifecycle,
)

log = logging.getLogger("eventvault.store.postgres")


class PostgresEventStore(EventStore):
    """The event store on PostgreSQL.

    ``conninfo`` is a ``postgresql://`` URL (without the query string) or a libpq
    ``key=value`` string. Options are listed in the package documentation; the
    schema is created or migrated on :meth:`open` (which the first call also does).
    """

    scheme = "postgresql"
    supports_dcb = True

    def __init__(self, conninfo: str, *, registry: EventRegistry | None = None, **options: Any) -> None:
        super().__init__(registry=registry)
        if not isinstance(conninfo, str):
            raise InvalidStoreURL(f"conninfo is a str, got {type(conninfo).__name__}")
        try:
            parts = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise InvalidStoreURL(f"not a PostgreSQL connection string: {reason(exc)}") from None
        self._options, self._libpq = parse_options(options)
        self._conninfo = conninfo
        self.schema = self._options.schema
        self.poll_interval = self._options.poll_interval
        host = self._libpq.get("host", parts.get("host", "localhost"))
        port = self._libpq.get("port", parts.get("port", "5432"))
        dbname = self._libpq.get("dbname", parts.get("dbname", ""))
        self._target = f"PostgreSQL at {host}:{port}/{dbname} (schema {self.schema})"
        self._sql = statements(self.schema)
        self._db = Connections(conninfo, self._libpq, self._options, self._target)
        prepared = Prepared()
        self._live = Notifications(self._db, self._sql, self._options, self._wake_waiters, prepared=prepared)
        self.channel = self._live.channel
        self._appends = Appends(self._db, self._sql, self._options, self._live.appended, prepared=prepared)
        self._reads = Reads(self._db, self._sql, self.codec, prepared=prepared)
        self.keys = PostgresKeyStore(self._db, self.schema)
        self._dcb = DCB(
            self._db, self._sql, self._options, self._live.appended, self._reads.event, prepared=prepared
        )
        self._deletes = Deletes(self._db, self._sql, self.schema)
        self._open_lock = asyncio.Lock()

    @property
    def conninfo(self) -> str:
        """The libpq connection string of this store's database (for read models beside it)."""
        return make_conninfo(self._conninfo, **self._libpq)

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> Self:
        """Create or migrate the schema and start the pool. Idempotent."""
        self._check_open()
        if self._db.pool is not None:
            return self
        async with self._open_lock:
            if self._db.pool is None:
                # The migration mechanism is the blocking DB-API one the read
                # models use too (eventvault.store.migrations): on a thread.
                version = await asyncio.to_thread(self._migrate)
                log.debug("%s is at schema version %d", self._target, version)
                await self._db.start()
        return self

    def _migrate(self) -> int:
        conn = self._db.connect_blocking("open")
        try:
            return migrate(conn, self.schema, self._target)
        except psycopg.Error as exc:
            raise self._db.error(f"opening the schema on {self._target}", exc) from exc
        finally:
            conn.close()

    async def close(self) -> None:
        """Stop the listener and any pending notification, and close the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._live.close()
        # Groups of appends in flight finish (their callers wait for them); appends
        # still waiting run alone and find the store closed.
        await self._appends.close()
        await self._db.close()

    async def _opened(self) -> None:
        if self._db.pool is None:
            await self.open()
        if self._closed:
            raise StoreClosed(f"this {self.scheme} store is closed")

    # -- writing -----------------------------------------------------------------------

    async def _append(
        self, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        await self._opened()
        return await self._appends.append(stream_id, events, expected)

    async def _append_conditioned(
        self,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        condition: AppendCondition | None,
    ) -> AppendResult:
        await self._opened()
        return await self._dcb.append(stream_id, events, expected, condition)

    async def _read_query(
        self, query: Query, after: int, limit: int | None, backwards: bool
    ) -> SequencedEvents:
        await self._opened()
        return await self._dcb.read(query, after, limit, backwards)

    async def append_on(
        self, conn: Conn, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        """Run the append statement on ``conn``, in the caller's transaction if it has one.

        ``events`` come from :meth:`prepare`. The store's own appends run the
        same statement on a pooled autocommit connection: the one statement is
        the whole transaction, and a conflict ends nothing else. In a caller's
        explicit transaction (to write events and other rows atomically; the
        tests hold appending transactions open with it) the statement runs under
        a savepoint, so a conflict leaves that transaction usable. The events
        become readable once that transaction commits, and until then it holds
        the horizon for every reader; no notification is sent for them, so
        waiting readers find them by their poll.

        Such a transaction must be an event writer before it writes anything:
        call :meth:`declare_writer` first, or make this append its first write.
        One that wrote other rows first is refused with :class:`StoreError`
        (readers may already have read past its transaction id).
        """
        return await self._appends.append_on(conn, stream_id, events, expected)

    async def declare_writer(self, conn: Conn) -> None:
        """Make the transaction open on ``conn`` an event writer, until it ends.

        Call it first in a transaction that will append with :meth:`append_on`,
        before the transaction writes anything. Readers wait for an event writer
        (its events become readable, in order, when it commits) and for nothing
        else: a transaction elsewhere in the cluster, or one writing only other
        tables, never holds them back. A writer takes the schema's writers'
        lock (a shared transaction-level advisory lock) before its first write,
        which is how readers tell it apart; see docs/decisions/0018.

        Raises :class:`StoreError` if the transaction already wrote something
        without being a writer: readers may have read past its transaction id,
        so events it wrote now could be skipped. Roll it back and start again
        with this call first.
        """
        await self._appends.declare_writer(conn)

    # -- reading -----------------------------------------------------------------------

    async def _read_stream(  # noqa: PLR0913, PLR0917 - the base class's signature
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]:
        await self._opened()
        return await self._reads.read_stream(
            stream_id, from_version, to_version, backwards=backwards, limit=limit, as_of_us=as_of_us
        )

    async def _read_shown(  # noqa: PLR0913, PLR0917 - the base class's signature
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]:
        # The stream's rules are applied by the read's own statement: one round trip.
        await self._opened()
        return await self._reads.read_stream(
            stream_id,
            from_version,
            to_version,
            backwards=backwards,
            limit=limit,
            as_of_us=as_of_us,
            rules=True,
        )

    async def _stream_version(self, stream_id: str) -> int:
        await self._opened()
        return await self._reads.stream_version(stream_id)

    async def _read_all(self, after: Checkpoint, limit: int, event_types: tuple[str, ...] | None) -> LogPage:
        await self._opened()
        return await self._reads.read_all(after, limit, event_types)

    async def _read_category(self, stream_prefix: str, after: Checkpoint, limit: int) -> LogPage:
        await self._opened()
        return await self._reads.read_category(stream_prefix, prefix_end(stream_prefix), after, limit)

    async def _list_streams(self, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        await self._opened()
        upper = None if prefix is None else prefix_end(prefix)
        return await self._reads.list_streams(prefix or "", upper, after, limit)

    async def _get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        await self._opened()
        return await self._reads.get_event(event_id)

    async def _counts(self) -> StoreCounts:
        await self._opened()
        events, streams = await self._reads.counts()
        return StoreCounts(events, streams, await self._reads.head())

    async def _head(self) -> Checkpoint:
        await self._opened()
        return await self._reads.head()

    async def _checkpoint_at(self, position: int) -> Checkpoint | None:
        await self._opened()
        return await self._reads.checkpoint_at(position)

    async def _stored_ids(self, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        await self._opened()
        query = sql.SQL("SELECT event_id FROM {s}.events WHERE event_id = ANY(%s)").format(
            s=sql.Identifier(self.schema)
        )

        async def op(conn: Conn) -> set[uuid.UUID]:
            async with conn.cursor() as cur:
                await cur.execute(query, [event_ids])
                return {row[0] for row in await cur.fetchall()}

        return await self._db.run("stored_ids", op)

    async def _write_recorded(
        self, events: list[RecordedEvent], before: Mapping[str, int] | None = None
    ) -> None:
        await self._opened()
        s = sql.Identifier(self.schema)
        rows = [
            (
                e.position,
                e.event_id,
                e.stream_id,
                e.stream_version,
                e.event_type,
                e.schema_version,
                e.occurred_us,
                e.recorded_us,
                e.payload,
                e.metadata_json,
                list(e.tags),
            )
            for e in events
        ]
        versions: dict[str, int] = {}
        for e in events:
            versions[e.stream_id] = e.stream_version
        tags = [(tag, e.position) for e in events for tag in e.tags]
        declare = self._sql.declare_writer
        insert = sql.SQL(
            "INSERT INTO {s}.events (position, event_id, stream_id, stream_version, event_type, "
            "schema_version, occurred_us, recorded_us, data, metadata, tags) OVERRIDING SYSTEM VALUE "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(s=s)
        streams = sql.SQL(
            "INSERT INTO {s}.streams (stream_id, version) VALUES (%s, %s) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version"
        ).format(s=s)
        tag_rows = sql.SQL(
            "INSERT INTO {s}.event_tags (tag, tx_id, position) VALUES (%s, pg_current_xact_id(), %s)"
        ).format(s=s)
        # The identity sequence moves past the imported positions, so new appends
        # land above them (it never moves back).
        move_sequence = sql.SQL(
            "SELECT setval(pg_get_serial_sequence({table}, 'position'), "
            "greatest(%s, (SELECT last_value FROM {seq})))"
        )

        before = versions_before(events) if before is None else before
        deletions = recorded_deletions(events)
        mark_deleted = sql.SQL(
            "UPDATE {s}.streams SET deleted_version = %s, tombstoned = %s WHERE stream_id = %s"
        ).format(s=s)
        drop_snapshots = sql.SQL("DELETE FROM {s}.snapshots WHERE stream_id = %s").format(s=s)
        head_now = sql.SQL("SELECT max(position) FROM {s}.events").format(s=s)
        versions_now = sql.SQL("SELECT stream_id, version FROM {s}.streams WHERE stream_id = ANY(%s)").format(
            s=s
        )

        async def op(conn: Conn) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                # A writer like any append (the read horizon waits for this
                # transaction), and alone: appends wait until the import commits.
                await cur.execute(declare)
                await cur.execute(sql.SQL("LOCK TABLE {s}.events IN SHARE ROW EXCLUSIVE MODE").format(s=s))
                # Checked before, and again now that no append can land: one may have meanwhile.
                await cur.execute(head_now)
                found = await cur.fetchone()
                head = 0 if found is None or found[0] is None else int(found[0])
                if head >= events[0].position:
                    raise InvalidInput(
                        f"nothing written: an append moved the head to position {head} meanwhile: "
                        "positions must rise above it"
                    )
                await cur.execute(versions_now, [list(before)])
                for stream_id, version in await cur.fetchall():
                    if version != before[stream_id]:
                        raise InvalidInput(
                            f"nothing written: an append moved stream {stream_id!r} "
                            f"to version {version} meanwhile"
                        )
                await cur.executemany(insert, rows)
                await cur.executemany(streams, list(versions.items()))
                for stream_id, version, tombstone in deletions:  # $StreamDeleted events delete here too
                    await cur.execute(mark_deleted, [version, tombstone, stream_id])
                    await cur.execute(drop_snapshots, [stream_id])
                if tags:
                    await cur.executemany(tag_rows, tags)
                await cur.execute(
                    "SELECT pg_get_serial_sequence(%s, 'position')", [f'"{self.schema}".events']
                )
                found = await cur.fetchone()
                assert found is not None  # noqa: S101 - an identity column has its sequence
                seq = sql.SQL(found[0])
                await cur.execute(
                    move_sequence.format(table=sql.Literal(f'"{self.schema}".events'), seq=seq),
                    [events[-1].position],
                )

        await self._db.run(f"write_recorded({len(events)} events)", op, writes=True)

    # -- deletes, truncation and retention -----------------------------------------

    async def _lifecycle(self, stream_id: str) -> StreamLifecycle:
        await self._opened()
        return await self._reads.lifecycle(stream_id)

    async def _snapshot_and_stream_shown(
        self, stream_id: str, schema_version: int, to_version: int | None
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        # The stream's lifecycle, its snapshot and the events after it in one
        # statement: one round trip (the base class's way takes three).
        await self._opened()
        life, snap, events = await self._reads.snapshot_and_stream(stream_id, schema_version, to_version)
        if life.has_rules and (life.deleted or snap is None or snap.stream_version < life.deleted_version):
            # Rules decide which events show: the general way (rare, so its extra trips are fine).
            return await super()._snapshot_and_stream_shown(stream_id, schema_version, to_version)
        # No rules, or a snapshot taken since the stream's last delete: every event after
        # the snapshot is shown (retention keeps what a snapshot needs), as the base class says.
        return snap, events

    async def _delete_stream(
        self, stream_id: str, expected: ExpectedVersion, tombstone: bool
    ) -> AppendResult | None:
        await self._opened()
        result = await self._deletes.delete(stream_id, expected, tombstone)
        if result is not None:
            self._live.appended()
        return result

    async def _set_retention(
        self,
        stream_id: str,
        *,
        truncate_before: int | None = None,
        retention: tuple[int | None, int | None] | None = None,
    ) -> None:
        await self._opened()
        s = sql.Identifier(self.schema)
        for value in (truncate_before, *(retention or ())):
            if value is not None and value > 2**63 - 1:
                raise InvalidInput("versions, counts and ages must be below 2**63 on PostgreSQL")
        statements: list[tuple[sql.Composed, list[Any]]] = []
        if truncate_before is not None:
            statements.append(
                (
                    sql.SQL(
                        "INSERT INTO {s}.streams (stream_id, version, truncate_before) VALUES (%s, 0, %s) "
                        "ON CONFLICT (stream_id) DO UPDATE SET truncate_before = excluded.truncate_before"
                    ).format(s=s),
                    [stream_id, truncate_before],
                )
            )
        if retention is not None:
            statements.append(
                (
                    sql.SQL(
                        "INSERT INTO {s}.streams (stream_id, version, max_count, max_age_us) "
                        "VALUES (%s, 0, %s, %s) ON CONFLICT (stream_id) DO UPDATE "
                        "SET max_count = excluded.max_count, max_age_us = excluded.max_age_us"
                    ).format(s=s),
                    [stream_id, *retention],
                )
            )

        async def op(conn: Conn) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                for statement, params in statements:
                    await cur.execute(statement, params)

        await self._db.run(f"retention of {stream_id!r}", op)

    async def _ruled_streams(self) -> list[str]:
        await self._opened()
        statement = self._sql.ruled_streams

        async def op(conn: Conn) -> list[str]:
            async with conn.cursor() as cur:
                await cur.execute(statement)
                return [row[0] for row in await cur.fetchall()]

        return await self._db.run("streams with rules", op)

    async def _remove_events(self, stream_id: str, below: int) -> int:
        await self._opened()
        s = sql.Identifier(self.schema)
        # The stream's events below `below` and below its last one, with their tag rows.
        remove = sql.SQL(
            """
            WITH gone AS (
                DELETE FROM {s}.events
                WHERE stream_id = %(stream_id)s AND stream_version < %(below)s
                  AND stream_version < (SELECT max(stream_version) FROM {s}.events
                                        WHERE stream_id = %(stream_id)s)
                RETURNING tx_id, position, tags),
            tags_gone AS (
                DELETE FROM {s}.event_tags AS t
                USING (SELECT tx_id, position, unnest(tags) AS tag FROM gone) AS g
                WHERE t.tag = g.tag AND t.tx_id = g.tx_id AND t.position = g.position)
            SELECT count(*) FROM gone"""
        ).format(s=s)
        params = {"stream_id": stream_id, "below": min(below, 2**62)}

        async def op(conn: Conn) -> int:
            async with conn.cursor() as cur:
                await cur.execute(remove, params)
                row = await cur.fetchone()
            return 0 if row is None else int(row[0])

        return await self._db.run(f"scavenge of {stream_id!r}", op, writes=True)

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        await self._opened()
        await self._reads.save_snapshot(snapshot)

    async def _list_snapshots(
        self, prefix: str | None, stream_id: str | None, limit: int
    ) -> list[SnapshotInfo]:
        await self._opened()
        return await self._reads.list_snapshots(prefix, stream_id, limit)

    async def _drop_snapshots(self, prefix: str | None, stream_id: str | None) -> int:
        await self._opened()
        return await self._reads.drop_snapshots(prefix, stream_id)

    async def _load_snapshot(self, stream_id: str, schema_version: int) -> Snapshot | None:
        await self._opened()
        return await self._reads.load_snapshot(stream_id, schema_version)

    # -- live reads ------------------------------------------------------------------------

    async def _prepare_wait(self) -> None:
        """Make sure the pool and the LISTEN connection run before a wait_for_events.

        The base class's wait returns as soon as :meth:`head` is beyond the
        checkpoint. The LISTEN connection wakes waiters when any store appends
        to this schema (debounced by ``notify_debounce``); between wake-ups the
        head is polled every ``poll_interval`` seconds, because a notification
        can be lost and the horizon also moves when a transaction that appended
        nothing ends.
        """
        await self._opened()
        self._live.listen()

    # -- monitoring ------------------------------------------------------------------------

    async def read_horizon_lag(self) -> HorizonLag:
        """How many committed events readers cannot see yet, and the event writer holding them back."""
        self._check_open()
        await self._opened()
        return await self._reads.horizon_lag()

    def __repr__(self) -> str:
        return f"<PostgresEventStore {self._target}{' closed' if self._closed else ''}>"
