"""Dynamic consistency boundaries: query reads below the read horizon, and conditional appends.

A conditional append is one transaction (READ COMMITTED) on a pooled
connection: ``dcb_lock()`` takes the writers' lock and the advisory locks of
the tags involved, in one fixed order; then one statement, with a fresh
snapshot, checks the condition and appends only if it holds (:func:`append_sql`).
The transaction goes in one pipeline, one round trip, sent through ``_libpq``
as the plain appends are (a round that looks its event ids up first, after a
refusal, goes through psycopg's cursor). Why that is enough, with
positions that commit out of order, is in docs/decisions/0028.

After a position ``P`` means after ``P``'s place in the log order, ``(tx_id,
position)``, as for read_all's checkpoints: the events a read at head ``P``
did not see, whatever their positions (see :func:`_after`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, NamedTuple

import psycopg.errors
from psycopg import sql
from psycopg.rows import RowMaker, args_row

from eventvault.errors import AppendConditionFailed, StoreError
from eventvault.store.base import Found, PreparedEvent, check_version_matches, idempotent_result
from eventvault.store.postgres._appends import _bytea, _Inserted, _quoted, _result, stream_state
from eventvault.store.postgres._connections import Conn, Connections
from eventvault.store.postgres._libpq import Prepared, Statement, dcb_append_statement, dcb_lock_statement
from eventvault.store.postgres._options import Options
from eventvault.store.postgres._schema import _EVENT_COLUMNS, EVENT_COLUMN_COUNT, Statements, tag_key
from eventvault.store.records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendCondition,
    AppendResult,
    ExpectedVersion,
    Query,
    QueryItem,
    RecordedEvent,
    SequencedEvents,
)

_ROUNDS: Final = 5
_HELD_WAIT: Final = 10.0  # seconds at most a query read waits for a matching event held back
_HELD_PAUSE: Final = 0.001
_HELD_MAX_PAUSE: Final = 0.05
# Append statements kept, by their query's shape: more than a store meets in practice.
_SHAPES: Final = 256
_READ_COMMITTED: Final = b"SET TRANSACTION ISOLATION LEVEL READ COMMITTED"


class _Stored(NamedTuple):
    event_id: Any
    stream_id: str
    stream_version: int
    position: int
    tx: int


_Row = tuple[RecordedEvent | None, int, int | None, int]
"""A row of a query read: the event (None: no match), the head, the newest held-back tx, the horizon."""


class _Refused(Exception):
    """The stream changed under an append refused by its expected version: run it again."""


def _after(s: sql.Identifier) -> sql.Composed:
    # The place of `after` in the log order: its event's, or when no event has that
    # position (a gap, or past the end), the nearest one before it; (0, 0) for none.
    return sql.SQL(
        "a AS MATERIALIZED (SELECT coalesce(l.tx_id, '0'::xid8) AS tx, coalesce(l.position, 0) AS pos "
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT tx_id, position FROM {s}.events "
        "WHERE position <= %(after)s ORDER BY position DESC LIMIT 1) AS l ON true)"
    ).format(s=s)


_Horizon = Literal["any", "below", "beyond"]
_HORIZONS: Final[dict[str, sql.SQL]] = {
    "any": sql.SQL(""),
    "below": sql.SQL(" AND {col} < (SELECT xmin FROM horizon)"),
    "beyond": sql.SQL(" AND {col} >= (SELECT xmin FROM horizon)"),
}


def _item(s: sql.Identifier, item: QueryItem, i: int, *, horizon: _Horizon) -> sql.Composed:
    """The (tx_id, position) of the events ``item`` matches after ``a``, in log order.

    ``horizon`` keeps those below the read horizon, those at or beyond it
    (committed but held back, or not visible), or any.
    """
    types = (
        sql.SQL(" AND e.event_type = ANY({}::text[])").format(sql.Placeholder(f"types{i}"))
        if item.types
        else sql.SQL("")
    )
    if item.tags:
        # Driven by the event_tags range of the item's first tag (every matching
        # event carries it); the event's other tags and type are checked on its row.
        rest = (
            sql.SQL(" AND e.tags @> {}::text[]").format(sql.Placeholder(f"tags{i}"))
            if len(item.tags) > 1
            else sql.SQL("")
        )
        return sql.SQL(
            "SELECT e.tx_id, e.position FROM {s}.event_tags AS t JOIN {s}.events AS e "
            "ON e.tx_id = t.tx_id AND e.position = t.position "
            "WHERE t.tag = {tag} AND (t.tx_id, t.position) > ((SELECT tx FROM a), (SELECT pos FROM a))"
            "{below}{rest}{types}"
        ).format(
            s=s,
            tag=sql.Placeholder(f"tag{i}"),
            below=_HORIZONS[horizon].format(col=sql.SQL("t.tx_id")),
            rest=rest,
            types=types,
        )
    return sql.SQL(
        "SELECT e.tx_id, e.position FROM {s}.events AS e "
        "WHERE (e.tx_id, e.position) > ((SELECT tx FROM a), (SELECT pos FROM a)){below}{types}"
    ).format(
        s=s,
        below=_HORIZONS[horizon].format(col=sql.SQL("e.tx_id")),
        types=types,
    )


def _params(query: Query, after: int) -> dict[str, Any]:
    params: dict[str, Any] = {"after": after}
    for i, item in enumerate(query.items):
        if item.types:
            params[f"types{i}"] = list(item.types)
        if item.tags:
            params[f"tag{i}"] = item.tags[0]
            if len(item.tags) > 1:
                params[f"tags{i}"] = list(item.tags)
    return params


def _literals(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with their lists as array literals in text, as ``_libpq`` sends parameters."""
    return {
        k: "{" + ",".join([_quoted(x) for x in v]) + "}" if isinstance(v, list) else v
        for k, v in params.items()
    }


def _first_match(s: sql.Identifier, query: Query) -> sql.Composed:
    """The first event (in log order) ``query`` matches after ``a``, committed, any horizon."""
    firsts = sql.SQL(" UNION ALL ").join(
        sql.SQL("({} ORDER BY 1, 2 LIMIT 1)").format(_item(s, item, i, horizon="any"))
        for i, item in enumerate(query.items)
    )
    return sql.SQL("SELECT position FROM ({firsts}) AS m ORDER BY tx_id, position LIMIT 1").format(
        firsts=firsts
    )


def condition_sql(s: sql.Identifier, query: Query) -> sql.Composed:
    """The check of :func:`append_sql` as a read-only statement of its own (to EXPLAIN it)."""
    return sql.SQL("WITH {a} {first}").format(a=_after(s), first=_first_match(s, query))


def append_sql(s: sql.Identifier, bump: sql.Composable, query: Query | None) -> bytes:
    """The append of tagged events, gated by the condition ``query`` (if any) after ``%(after)s``.

    One statement: the check in this statement's snapshot (the caller took the
    locks in a statement before), then, only if nothing matched, the stream's
    bump (which selects from ``writer``; the writers' lock is held already) and
    the events with their event_tags rows. It returns one row per event written
    (position, tx, stream_version, NULL), or one row whose last column is the
    position of the first match; nothing when the expected version refused it.
    A statement that writes is never run with parallel workers, so the check's
    small index probe never waits for a worker to start (a SELECT of the same
    check was planned under a parallel Gather at 1,000,000 events).
    """
    gate: sql.Composable
    if query is None:
        gate = sql.SQL("writer AS MATERIALIZED (SELECT)")
        conflict = sql.SQL("")
    else:
        gate = sql.SQL(
            "{a}, conflict AS MATERIALIZED ({first}), "
            "writer AS MATERIALIZED (SELECT WHERE NOT EXISTS (SELECT FROM conflict))"
        ).format(a=_after(s), first=_first_match(s, query))
        conflict = sql.SQL(" UNION ALL SELECT NULL, NULL, NULL, position FROM conflict")
    # Each event's tags (a JSON array in text) go into events.tags, and one
    # event_tags row per tag, in the same statement.
    return (
        sql.SQL(
            """
            WITH {gate}, bump AS ({bump}
                RETURNING version, (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now_us),
            ins AS (
                INSERT INTO {s}.events (event_id, stream_id, stream_version, event_type, schema_version,
                                        occurred_us, recorded_us, data, metadata, tags)
                SELECT u.event_id, %(stream_id)s, bump.version - %(n)s + u.ord, u.event_type,
                       u.schema_version, u.occurred_us, bump.now_us, u.data, u.metadata,
                       ARRAY(SELECT jsonb_array_elements_text(u.tags::jsonb))
                FROM bump,
                     unnest(%(ids)s::uuid[], %(types)s::text[], %(versions)s::int4[],
                            %(occurred)s::int8[], %(data)s::bytea[], %(meta)s::bytea[], %(tags)s::text[])
                         WITH ORDINALITY AS u(event_id, event_type, schema_version, occurred_us,
                                              data, metadata, tags, ord)
                ORDER BY u.ord
                RETURNING position, tx_id, stream_version, tags),
            tagged AS (
                INSERT INTO {s}.event_tags (tag, tx_id, position)
                SELECT t.tag, ins.tx_id, ins.position FROM ins, unnest(ins.tags) AS t(tag))
            SELECT position, tx_id::text::int8, stream_version, NULL::int8 FROM ins{conflict}
            ORDER BY 1"""
        )
        .format(s=s, gate=gate, bump=bump, conflict=conflict)
        .as_bytes(None)
    )


def read_sql(s: sql.Identifier, query: Query, *, backwards: bool) -> sql.Composed:
    """The events ``query`` matches after ``%(after)s`` below the read horizon, and the readable head.

    And the transaction id of the newest matching event committed before the
    statement but held back beyond the horizon (an older event writer still
    runs), NULL if none; and the horizon.
    """
    matched = sql.SQL(" UNION ").join(
        _item(s, item, i, horizon="below") for i, item in enumerate(query.items)
    )
    beyond = sql.SQL(" UNION ALL ").join(
        sql.SQL("({} ORDER BY 1 DESC, 2 DESC LIMIT 1)").format(_item(s, item, i, horizon="beyond"))
        for i, item in enumerate(query.items)
    )
    direction = sql.SQL("DESC" if backwards else "ASC")
    return sql.SQL(
        """
        WITH horizon AS MATERIALIZED (SELECT {s}.read_horizon() AS xmin), {a},
        head AS (
            SELECT position FROM {s}.events WHERE tx_id < (SELECT xmin FROM horizon)
            ORDER BY tx_id DESC, position DESC LIMIT 1),
        m AS ({matched}),
        page AS (
            SELECT {cols} FROM {s}.events WHERE (tx_id, position) IN (SELECT tx_id, position FROM m)
            ORDER BY tx_id {d}, position {d} LIMIT %(limit)s)
        SELECT page.*, coalesce((SELECT position FROM head), 0),
            (SELECT max(b.tx_id) FROM ({beyond}) AS b), (SELECT xmin FROM horizon)
        FROM (SELECT 1) AS one LEFT JOIN page ON true
        ORDER BY page.tx_id {d}, page.position {d}"""
    ).format(s=s, a=_after(s), matched=matched, beyond=beyond, cols=_EVENT_COLUMNS, d=direction)


def _lock_keys(
    schema: str, query: Query | None, events: list[PreparedEvent]
) -> tuple[bool, list[int], list[bool]]:
    """What dcb_lock() takes: the writers' lock exclusive or not, and each tag key in order, exclusive or not.

    A condition's item with tags locks each of its tags exclusive (every event it
    matches carries them, and the writer of such an event holds them shared); an
    item without tags (types only, or every event) can be matched by any stream
    append, tagged or not, so it takes the writers' lock exclusive, which every
    event writer holds shared. The append's own events' tags are locked shared.
    """
    checked: set[str] = set()
    whole_log = False
    if query is not None:
        for item in query.items:
            if item.tags:
                checked.update(item.tags)
            else:
                whole_log = True
    written = {t for e in events for t in e.tags}
    keys: dict[int, bool] = {}
    for tag in checked | written:
        k = tag_key(schema, tag)
        keys[k] = keys.get(k, False) or tag in checked
    order = sorted(keys)
    return whole_log, order, [keys[k] for k in order]


def _append_params(stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion) -> dict[str, Any]:
    # The arrays go as array literals in text, which the statement casts (as the
    # plain appends' do): joining the text costs less client CPU than psycopg's
    # adapting each list element by element.
    return {
        "stream_id": stream_id,
        "n": len(events),
        "expected": expected if isinstance(expected, int) else None,
        "ids": "{" + ",".join([str(e.event_id) for e in events]) + "}",
        "types": "{" + ",".join([_quoted(e.event_type) for e in events]) + "}",
        "versions": "{" + ",".join([str(e.schema_version) for e in events]) + "}",
        "occurred": "{" + ",".join([str(e.occurred_us) for e in events]) + "}",
        "data": "{" + ",".join([_bytea(e.payload) for e in events]) + "}",
        "meta": "{" + ",".join([_bytea(e.metadata) for e in events]) + "}",
        "tags": "{" + ",".join([_quoted(json.dumps(list(e.tags))) for e in events]) + "}",
    }


def _kind(expected: ExpectedVersion) -> str:
    if expected is NO_STREAM or expected == 0:
        return "new"
    if expected is ANY:
        return "any"
    if expected is STREAM_EXISTS:
        return "exists"
    return "exact"


class DCB:
    """Query reads and conditional appends, on the store's pooled connections."""

    def __init__(  # noqa: PLR0913 - the store's parts this one runs on
        self,
        db: Connections,
        statements: Statements,
        options: Options,
        appended: Callable[[], None],
        event: Callable[[Sequence[Any]], RecordedEvent],
        *,
        prepared: Prepared,
    ) -> None:
        self._db = db
        self._prepared = prepared
        self._sql = statements
        self._schema = options.schema
        self._s = sql.Identifier(options.schema)
        self._appended = appended
        self._event = event
        self._lock = (
            sql.SQL("SELECT {s}.dcb_lock(%(whole_log)s::bool, %(keys)s::int8[], %(exclusive)s::bool[])")
            .format(s=self._s)
            .as_bytes(None)
        )
        self._hot_lock = dcb_lock_statement(self._lock)
        self._statements: dict[tuple[str, Any], tuple[bytes, Statement]] = {}

    async def _landed(self, conn: Conn, stream_id: str, events: list[PreparedEvent]) -> AppendResult | None:
        """The first result, if these events are stored at this place (DuplicateEventId elsewhere).

        A tombstone comes first (StreamDeleted): it refuses even a retry of events stored before it.
        """
        await stream_state(conn, self._sql.stream_state, stream_id)
        async with conn.cursor(row_factory=args_row(_Stored)) as cur:
            await cur.execute(self._sql.lookup_ids, [[e.event_id for e in events]], binary=True)
            found = {
                r.event_id: Found(r.stream_id, r.stream_version, r.position, r.tx)
                for r in await cur.fetchall()
            }
        return idempotent_result(stream_id, events, found)

    async def read(self, query: Query, after: int, limit: int | None, backwards: bool) -> SequencedEvents:
        """What :meth:`EventStore.read` returns: one statement, so the page and the head share a snapshot.

        A decision must rest on every event committed before it was asked for.
        When a matching event is held back beyond the read horizon (an older
        event writer still runs; the server tells no one when it ends), the read
        is made again, at growing intervals, until the horizon has passed it, for at most
        ``_HELD_WAIT`` seconds: past that it answers with what is below the
        horizon, which a condition after its head still guards. Writers are
        never made to wait by it.
        """
        stmt = read_sql(self._s, query, backwards=backwards)
        params = _params(query, after)
        params["limit"] = limit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _HELD_WAIT
        pause = _HELD_PAUSE
        rows = await self._read_once(stmt, params)
        # Only what was committed before the first read is waited for: events that
        # commit meanwhile are after it, so a busy tag cannot keep the read going.
        needed = rows[0][2]
        while needed is not None and rows[0][3] <= needed and loop.time() < deadline:
            await asyncio.sleep(pause)  # another transaction's end, of which nothing tells
            pause = min(pause * 2, _HELD_MAX_PAUSE)
            rows = await self._read_once(stmt, params)
        return SequencedEvents([e for e, _, _, _ in rows if e is not None], rows[0][1])

    async def _read_once(self, stmt: sql.Composed, params: dict[str, Any]) -> list[_Row]:
        """The rows of one query read: (event or None, head, newest held back tx, horizon), at least one."""
        event = self._event
        fields = EVENT_COLUMN_COUNT

        def rows(_cursor: Any) -> RowMaker[_Row]:
            def row(values: Sequence[Any]) -> _Row:
                ev = None if values[0] is None else event(values)
                return ev, values[fields], values[fields + 1], values[fields + 2]

            return row

        async def op(conn: Conn) -> list[_Row]:
            async with conn.cursor(row_factory=rows) as cur:
                await cur.execute(stmt, params, binary=True)
                return await cur.fetchall()

        return await self._db.run("read(query)", op)

    async def append(
        self,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        condition: AppendCondition | None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` with their tags, if ``expected`` and ``condition`` hold."""
        query = condition.fail_if_events_match if condition is not None else None
        whole_log, keys, exclusive = _lock_keys(self._schema, query, events)
        lock_params = {
            "whole_log": "t" if whole_log else "f",
            "keys": "{" + ",".join(map(str, keys)) + "}",
            "exclusive": "{" + ",".join("t" if x else "f" for x in exclusive) + "}",
        }
        insert, hot = self._statement(_kind(expected), query)
        params = _append_params(stream_id, events, expected)
        if condition is not None:
            params.update(_params(condition.fail_if_events_match, condition.after or 0))
        literals = _literals(params)

        async def once(conn: Conn, *, look_up: bool) -> AppendResult:
            # A first round is one round trip: the transaction, its isolation, the
            # locks and the gated append go in one pipeline (through _libpq),
            # answered at its one sync. The ids are looked up first only when a
            # round before was refused or hit a stored id: a retry that landed
            # always meets one of the two (the event ids are unique), so a first
            # round spends nothing on it.
            if look_up:
                async with conn.transaction():
                    await conn.execute(_READ_COMMITTED)
                    await conn.execute(self._lock, lock_params)
                    if (done := await self._landed(conn, stream_id, events)) is not None:
                        return done
                    cur = await conn.execute(insert, params, binary=True)
                    rows = await cur.fetchall()
            else:
                rows = await self._prepared.transaction(
                    conn, [(self._hot_lock, lock_params), (hot, literals)], tuple
                )
            if rows and rows[-1][3] is None:
                return _result_of(stream_id, rows)
            return await self._refused(conn, stream_id, events, expected, condition, rows)

        async def op(conn: Conn) -> AppendResult:
            look_up = False
            for _round in range(_ROUNDS):
                try:
                    return await once(conn, look_up=look_up)
                except (_Refused, psycopg.errors.UniqueViolation):
                    # The stream was created meanwhile (STREAM_EXISTS), or these event
                    # ids are stored: the next round looks them up first.
                    look_up = True
            raise StoreError(
                f"append to {stream_id!r}: refused {_ROUNDS} times with no conflict to report; "
                f"is {self._schema}.streams out of step with {self._schema}.events?"
            )

        result = await self._db.run(f"append to {stream_id!r}", op, writes=True)
        self._appended()
        return result

    async def _refused(  # noqa: PLR0913, PLR0917 - the append, and the rows its statement returned
        self,
        conn: Conn,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        condition: AppendCondition | None,
        rows: list[tuple[Any, ...]],
    ) -> AppendResult:
        """Why an append statement wrote nothing: its first result if it is a retry that landed, else raised.

        ``rows`` is empty when the expected version refused it, one row naming
        the first match when the condition failed. Either may be a retry of an
        append that landed (its ids are stored: that first result is returned).
        The expected version is checked first, as a refused append reports it
        before a failed condition; a version that holds now was refused
        meanwhile (the stream was created or moved): :class:`_Refused`, run again.
        """
        if (done := await self._landed(conn, stream_id, events)) is not None:
            return done
        if not rows or _kind(expected) != "any":
            state = await stream_state(conn, self._sql.stream_state, stream_id)
            check_version_matches(stream_id, expected, state.visible)
        if not rows:
            raise _Refused
        assert condition is not None  # noqa: S101 - only a condition names a match
        raise AppendConditionFailed(condition.fail_if_events_match, condition.after, int(rows[-1][3]))

    def _statement(self, kind: str, query: Query | None) -> tuple[bytes, Statement]:
        """The append of ``kind`` gated by ``query``, by the query's shape: for the cursor and for ``_libpq``.

        Both prepare it by its text (``_libpq`` names it after its text).
        """
        items = None if query is None else tuple((bool(i.types), min(len(i.tags), 2)) for i in query.items)
        shape = (kind, items)
        stmt = self._statements.get(shape)
        if stmt is None:
            if len(self._statements) >= _SHAPES:
                self._statements.clear()
            text = append_sql(self._s, self._sql.bumps[kind], query)
            names = () if query is None else tuple(_params(query, 0))
            stmt = self._statements[shape] = (text, dcb_append_statement(text, names))
        return stmt


def _result_of(stream_id: str, rows: list[tuple[Any, ...]]) -> AppendResult:
    """The result of an append statement that wrote ``rows`` (position, tx, stream_version, NULL)."""
    result = _result(stream_id, [_Inserted(r[0], r[1], r[2]) for r in rows])
    assert result is not None  # noqa: S101 - rows were written
    return result
