"""Appends: the one append statement, its conflicts, and appends that wait for one another going as one group.

An append is one statement in its own (autocommit) transaction, prepared on
each pooled connection (through ``_libpq``; on a caller's connection, psycopg's cursor).
While ``append_concurrency`` appends are in flight, the appends made meanwhile
wait and then go together: their statements in one pipeline, one transaction,
one round trip (see :meth:`Appends._group`, and docs/decisions/0016).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import psycopg
import psycopg.errors
from psycopg.pq import TransactionStatus
from psycopg.rows import args_row

from eventvault.errors import InvalidEvent, StoreError, StreamDeleted
from eventvault.store.base import Found, PreparedEvent, check_version_matches, idempotent_result
from eventvault.store.postgres._connections import Conn, Connections, reason
from eventvault.store.postgres._libpq import Prepared
from eventvault.store.postgres._options import Options
from eventvault.store.postgres._schema import Statements
from eventvault.store.records import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, Checkpoint, ExpectedVersion

log = logging.getLogger("eventvault.store.postgres")

_MAX_CONFLICT_ROUNDS: Final = 5
# The most appends one transaction carries when appends wait for one another.
_GROUP_MAX: Final = 64


class _Inserted(NamedTuple):
    """A row an append statement returns: one per event written."""

    position: int
    tx: int
    stream_version: int


class _Stored(NamedTuple):
    """Where an event id sits, as the conflict look-up finds it."""

    event_id: Any  # uuid.UUID, as psycopg loads it
    stream_id: str
    stream_version: int
    position: int
    tx: int


class StreamState(NamedTuple):
    """A stream's row as a refused append reads it (``Statements.stream_state``)."""

    version: int
    deleted_version: int
    tombstoned: bool

    @property
    def visible(self) -> int:
        """The version expected versions are checked against: 0 while deleted."""
        return 0 if self.version == self.deleted_version else self.version


NO_ROW: Final = StreamState(0, 0, tombstoned=False)
stream_state_rows: Final = args_row(StreamState)


async def stream_state(conn: Conn, statement: bytes, stream_id: str) -> StreamState:
    """The stream's version and delete marks (NO_ROW: it has no row); StreamDeleted if tombstoned."""
    async with conn.cursor(row_factory=stream_state_rows) as cur:
        await cur.execute(statement, [stream_id])
        row = await cur.fetchone()
    if row is not None and row.tombstoned:
        raise StreamDeleted(stream_id)
    return NO_ROW if row is None else row


class _Writer(NamedTuple):
    declared: bool | None


_inserted_rows: Final = args_row(_Inserted)


def _inserted(values: Sequence[Any]) -> _Inserted:
    return _Inserted(*values)


_stored_rows: Final = args_row(_Stored)
_writer_rows: Final = args_row(_Writer)


class _Waiting(NamedTuple):
    """An append waiting to go with others in one transaction (see ``Appends._group``)."""

    stream_id: str
    query: bytes
    params: dict[str, Any]
    done: asyncio.Future[AppendResult | None]
    """Its result; None when it must run alone (refused, or the group failed)."""


def _quoted(text: str) -> str:
    """``text`` as one element of a PostgreSQL array literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bytea(data: bytes) -> str:
    """``data`` as one element of a bytea[] array literal (hex input, its backslash escaped)."""
    return '"\\\\x' + data.hex() + '"'


def _params(stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion) -> dict[str, Any]:
    """An append statement's parameters, by their names in the statement (it uses those it needs)."""
    version = expected if isinstance(expected, int) else None
    if len(events) == 1:
        [e] = events
        return {
            "stream_id": stream_id,
            "n": 1,
            "expected": version,
            "ids": e.event_id,
            "types": e.event_type,
            "versions": e.schema_version,
            "occurred": e.occurred_us,
            "data": e.payload,
            "meta": e.metadata,
        }
    # Several events go as array literals in text, which the statement casts:
    # psycopg adapts a Python list element by element (about 85 us for a
    # one-event append, 220 us for ten, measured), far more than the server
    # takes to run the whole statement; joining the text costs a few us.
    return {
        "stream_id": stream_id,
        "n": len(events),
        "expected": version,
        "ids": "{" + ",".join([str(e.event_id) for e in events]) + "}",
        "types": "{" + ",".join([_quoted(e.event_type) for e in events]) + "}",
        "versions": "{" + ",".join([str(e.schema_version) for e in events]) + "}",
        "occurred": "{" + ",".join([str(e.occurred_us) for e in events]) + "}",
        "data": "{" + ",".join([_bytea(e.payload) for e in events]) + "}",
        "meta": "{" + ",".join([_bytea(e.metadata) for e in events]) + "}",
    }


def _result(stream_id: str, rows: list[_Inserted]) -> AppendResult | None:
    """An append statement's result (None: it was refused)."""
    if not rows:
        return None
    last = rows[-1]
    positions = tuple([r.position for r in rows])
    return AppendResult(stream_id, last.stream_version, positions, Checkpoint(last.tx, last.position))


class Appends:
    """The store's appends, on its own connections (:meth:`append`) or a caller's (:meth:`append_on`).

    ``appended`` is called after appends committed on the store's connections.
    """

    def __init__(
        self,
        db: Connections,
        statements: Statements,
        options: Options,
        appended: Callable[[], None],
        *,
        prepared: Prepared,
    ) -> None:
        self._db = db
        self._prepared = prepared
        self._sql = statements
        self._options = options
        self._appended = appended
        self.in_flight = 0
        """Appends running on the store's connections, alone or as a group."""
        self.waiting: list[_Waiting] = []
        """Appends waiting to go as one group."""
        self._groups: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Let groups in flight finish (their callers wait for them)."""
        await asyncio.gather(*self._groups, return_exceptions=True)

    def _query(self, expected: ExpectedVersion, events: list[PreparedEvent]) -> bytes:
        if expected is NO_STREAM or expected == 0:
            kind = "new"
        elif expected is ANY:
            kind = "any"
        elif expected is STREAM_EXISTS:
            kind = "exists"
        else:
            kind = "exact"
        return self._sql.appends[kind, len(events) == 1]

    # -- on the store's connections ----------------------------------------------------

    async def append(
        self, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        """Append alone, or, while ``append_concurrency`` appends are in flight, with others.

        An append that finds that many in flight waits; when one of them
        finishes, every append then waiting goes in one transaction (see
        :meth:`_group`). An append refused there, or one whose group failed,
        runs alone after all, which reports what went wrong.
        """
        query = self._query(expected, events)
        params = _params(stream_id, events, expected)
        if self.in_flight >= self._options.append_concurrency and not self._db.closed:
            waiting = _Waiting(stream_id, query, params, asyncio.get_running_loop().create_future())
            self.waiting.append(waiting)
            done = await waiting.done
            if done is not None:
                return done
        self.in_flight += 1
        try:
            result = await self._db.run(
                f"append to {stream_id!r}",
                lambda conn: self._rounds(conn, stream_id, events, expected, query, params, own=True),
                writes=True,
            )
        finally:
            self.in_flight -= 1
            if self.waiting:
                self._start_groups()
        self._appended()
        return result

    def _start_groups(self) -> None:
        """Send the waiting appends, in groups of up to ``_GROUP_MAX``, while fewer than the limit run."""
        while self.waiting and self.in_flight < self._options.append_concurrency:
            group = [w for w in self.waiting[:_GROUP_MAX] if not w.done.done()]
            del self.waiting[:_GROUP_MAX]
            if group:
                self.in_flight += 1
                task = asyncio.get_running_loop().create_task(self._group(group))
                self._groups.add(task)
                task.add_done_callback(self._groups.discard)

    async def _group(self, group: list[_Waiting]) -> None:
        """Run a group of appends as one transaction: one round trip, one commit.

        The appends' statements go in one pipeline, in one transaction; they
        lock their streams' rows in the order of the stream ids, as every group
        does, so that two groups never wait for each other in a cycle. A
        refused append (its expected version does not hold) inserts nothing and
        the others commit; any error rolls the whole transaction back, and every
        append of the group then runs alone (an append of the group whose
        outcome a lost connection left unknown is safe to run again: the retry
        finds its event ids stored).
        """
        results: list[AppendResult | None] = [None] * len(group)
        try:
            pool = self._db.pool
            if pool is not None and not self._db.closed:
                conn = await self._db.acquire(pool)
                try:
                    results = await self._pipeline(conn, group)
                finally:
                    await self._db.release(pool, conn)
        except Exception as exc:  # noqa: BLE001 - each append then runs alone and reports it
            log.debug("a group of %d appends failed (%s); each runs alone", len(group), reason(exc))
        finally:
            self.in_flight -= 1
            if any(results):
                self._appended()
            for waiting, result in zip(group, results, strict=True):
                if not waiting.done.done():
                    waiting.done.set_result(result)
            if self.waiting:
                self._start_groups()

    async def _pipeline(self, conn: Conn, group: list[_Waiting]) -> list[AppendResult | None]:
        """Each append's result in one transaction (None: refused); raises if the transaction failed."""
        order = sorted(range(len(group)), key=lambda i: group[i].stream_id)
        hot = self._sql.hot.appends
        answers = await self._prepared.pipeline(
            conn, [(hot[group[i].query], group[i].params) for i in order], _inserted
        )
        results: list[AppendResult | None] = [None] * len(group)
        for i, rows in zip(order, answers, strict=True):
            results[i] = _result(group[i].stream_id, rows)
        return results

    # -- on any connection -------------------------------------------------------------

    async def append_on(
        self, conn: Conn, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        """Run the append statement on ``conn``, in the caller's transaction if it has one."""
        if any(e.tags for e in events):
            # The plain statement writes no tags, and conditions on them take locks
            # this statement does not: refused rather than stored without them.
            raise InvalidEvent(
                "append_on does not write tags: append tagged events with append or append_events"
            )
        if conn.info.transaction_status != TransactionStatus.IDLE:
            await self.declare_writer(conn)
        query = self._query(expected, events)
        params = _params(stream_id, events, expected)
        return await self._rounds(conn, stream_id, events, expected, query, params, own=False)

    async def declare_writer(self, conn: Conn) -> None:
        """Make the transaction on ``conn`` an event writer (``PostgresEventStore.declare_writer``)."""
        async with conn.cursor(row_factory=_writer_rows) as cur:
            await cur.execute(self._sql.declare_writer)
            row = await cur.fetchone()
        if row is None or not row.declared:
            raise StoreError(
                f"{self._db.target}: this transaction wrote before it was declared an event writer, so "
                "readers may already be past its transaction id; call declare_writer(conn) first in "
                "the transaction, before anything in it writes (docs/postgres.md, 'Appending in your "
                "own transaction')"
            )

    async def _rounds(  # noqa: PLR0913, PLR0917 - the append, its statement, whose connection
        self,
        conn: Conn,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        query: bytes,
        params: dict[str, Any],
        *,
        own: bool,
    ) -> AppendResult:
        """Run the append statement; when it is refused, report why or run it again."""
        for _round in range(_MAX_CONFLICT_ROUNDS):
            try:
                done = await self._statement(conn, stream_id, query, params, own=own)
            except psycopg.errors.UniqueViolation:
                done = None
            if done is not None:
                return done
            done = await self._resolve_conflict(conn, stream_id, events, expected)
            if done is not None:
                return done
            # The stream changed between the statement and the look-up (it was
            # created under STREAM_EXISTS): the condition may hold now, try again.
        raise StoreError(
            f"append to {stream_id!r}: refused {_MAX_CONFLICT_ROUNDS} times with no conflict to report; "
            f"is {self._options.schema}.streams out of step with {self._options.schema}.events?"
        )

    async def _statement(
        self, conn: Conn, stream_id: str, query: bytes, params: dict[str, Any], *, own: bool
    ) -> AppendResult | None:
        """The append statement (None: it was refused).

        On the store's own connections it runs as a statement prepared there
        (see ``_libpq``). On a caller's it goes through psycopg's cursor, and in
        the caller's transaction under a savepoint, so that a conflict leaves
        that transaction usable.
        """
        if own:
            return _result(
                stream_id, await self._prepared.rows(conn, self._sql.hot.appends[query], params, _inserted)
            )
        in_transaction = conn.info.transaction_status != TransactionStatus.IDLE
        async with (
            conn.transaction() if in_transaction else contextlib.nullcontext(),
            conn.cursor(row_factory=_inserted_rows) as cur,
        ):
            await cur.execute(query, params, binary=True)
            rows = await cur.fetchall()
        return _result(stream_id, rows)

    async def _resolve_conflict(
        self, conn: Conn, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult | None:
        """After a refused append: a retry that already landed, or the specific error.

        A tombstone comes first: it refuses even a retry of events stored before it.
        """
        state = await stream_state(conn, self._sql.stream_state, stream_id)
        async with conn.cursor(row_factory=_stored_rows) as cur:
            await cur.execute(self._sql.lookup_ids, [[e.event_id for e in events]], binary=True)
            found = {
                r.event_id: Found(r.stream_id, r.stream_version, r.position, r.tx)
                for r in await cur.fetchall()
            }
        done = idempotent_result(stream_id, events, found)
        if done is not None:
            return done
        check_version_matches(stream_id, expected, state.visible)
        return None
