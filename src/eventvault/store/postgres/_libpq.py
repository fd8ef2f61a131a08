"""The one place the store goes below psycopg's cursor: its hottest statements, sent through libpq.

What it buys: psycopg's async cursor (query conversion, dumpers, its prepared
statement cache, a chain of generators around every wait, and in a pipeline
the same again per statement plus its result bookkeeping) costs more client
CPU than PostgreSQL takes to run a one-event append or a short stream read.
The store's appends (alone and in groups), its conditional appends (DCB), its
notifications and its stream reads therefore run here: statements prepared once per pooled connection, sent
with ``PGconn.send_query_prepared`` (a group: one libpq pipeline ended by one
Sync), a wait on the socket, rows loaded with psycopg's own ``Transformer``.
Measured against psycopg's cursor for the same statements, interleaved in one
process: 1.15-1.5x the client CPU per lone append, 1.45-1.85x per stream read
and 1.8-2.2x per append under 32 concurrent writers, enough to miss the W1, W3
and W7 targets (docs/benchmarks.md, "PostgreSQL: the store split, and psycopg's public
API"). Everything else (the log, the head, snapshots, conflicts, migrations,
``append_on`` on a caller's connection) runs through the cursor.

It relies on psycopg's ``pq`` wrapper and ``adapt.Transformer``, which psycopg
does not promise to keep as they are: pyproject.toml pins the psycopg versions
it was tested with, and tests/postgres/test_own_connections.py and
test_append_groups.py check it (the same rows as the cursor writes and reads,
prepared statements after a reconnect, cancellation, a group as one
transaction, errors raised as psycopg raises them).

Only the store's own autocommit connections run statements this way, where the
store knows which statements it prepared; errors are psycopg's, built from the
same results as its cursor builds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

import psycopg
import psycopg.errors
from psycopg import pq
from psycopg.abc import Transformer as RowLoader
from psycopg.adapt import Transformer

from eventvault.store.postgres._connections import Conn, reason

log = logging.getLogger("eventvault.store.postgres")

R = TypeVar("R")

TEXT: Final = 25
INT8: Final = 20
BYTEA: Final = 17
BOOL: Final = 16
INFERRED: Final = 0


class Statement(NamedTuple):
    """A statement as this module prepares it on the store's connections."""

    name: bytes
    text: bytes
    """With ``$n`` placeholders."""
    params: tuple[str, ...]
    """The names of its parameters, in the order of their ``$n``."""
    types: tuple[int, ...]
    """The parameters' type oids (0: the server infers it)."""
    formats: list[int] | None
    """The parameters' formats (None: all text; 1: binary, for bytes). A list: psycopg 3.2 takes no tuple."""


def statement(
    name: str,
    query: bytes,
    params: tuple[str, ...],
    types: tuple[int, ...],
    binary: frozenset[str] = frozenset(),
) -> Statement:
    """``query`` (with psycopg's ``%(name)s`` placeholders) as a :class:`Statement`."""
    text = query
    for number, param in enumerate(params, start=1):
        text = text.replace(b"%(" + param.encode() + b")s", b"$%d" % number)
    if b"%(" in text or b"%s" in text:  # pragma: no cover - a statement of the store's own
        raise AssertionError(f"unexpected placeholder left in {text!r}")
    formats = [1 if p in binary else 0 for p in params] if binary else None
    return Statement(name.encode(), text, params, types, formats)


@dataclass(slots=True)
class _State:
    """What this module knows of one of the store's connections."""

    loader: RowLoader
    """Loads its results' rows with the connection's loaders (kept: it caches them per column type)."""
    encoding: str
    """The connection's client encoding, as a Python codec name."""
    prepared: set[bytes] = field(default_factory=set)
    """The names of the statements prepared on it."""


class Prepared:
    """Runs :class:`Statement` s on the store's connections, each prepared once per connection."""

    def __init__(self) -> None:
        self._states: dict[Conn, _State] = {}

    def _state(self, conn: Conn) -> _State:
        state = self._states.get(conn)
        if state is None:
            # A new connection: forget the ones the pool closed since the last one
            # (each state's loader holds its connection, so they go here, not by weak reference).
            for gone in [c for c in self._states if c.closed]:
                del self._states[gone]
            state = self._states[conn] = _State(Transformer(conn), conn.info.encoding)
        return state

    async def rows(
        self, conn: Conn, stmt: Statement, params: dict[str, Any], make_row: Callable[[Sequence[Any]], R]
    ) -> list[R]:
        """Run ``stmt`` on ``conn`` and load its rows with the connection's loaders into ``make_row``."""
        async with conn.lock:
            res = await self._run(conn, stmt, params)
            loader = self._state(conn).loader
            loader.set_pgresult(res)
            try:
                return loader.load_rows(0, res.ntuples, make_row)
            finally:
                loader.set_pgresult(None)

    async def execute(self, conn: Conn, stmt: Statement, params: dict[str, Any]) -> None:
        """Run ``stmt`` on ``conn`` for its effect."""
        async with conn.lock:
            await self._run(conn, stmt, params)

    async def _run(self, conn: Conn, stmt: Statement, params: dict[str, Any]) -> pq.abc.PGresult:
        encoding = self._state(conn).encoding
        await self._prepare(conn, stmt, encoding)
        self._send(conn.pgconn, stmt, params, encoding)
        return _one_result(await _results(conn), pq.ExecStatus.TUPLES_OK, encoding)

    async def pipeline(
        self,
        conn: Conn,
        commands: Sequence[tuple[Statement, dict[str, Any]]],
        make_row: Callable[[Sequence[Any]], R],
    ) -> list[list[R]]:
        """Run ``commands`` in one pipeline ended by one Sync: one round trip, one implicit transaction.

        PostgreSQL runs everything before a Sync as one transaction on this
        autocommit connection: committed at the Sync, or rolled back whole at
        the first error, which is raised. Each command's rows come back in order.
        """
        async with conn.lock:
            encoding = self._state(conn).encoding
            answers = await self._pipelined(conn, commands, encoding)
            loader = self._state(conn).loader
            rows: list[list[R]] = []
            for answer in answers:
                res = _one_result(answer, pq.ExecStatus.TUPLES_OK, encoding)
                loader.set_pgresult(res)
                rows.append(loader.load_rows(0, res.ntuples, make_row))
            loader.set_pgresult(None)
            return rows

    async def transaction(
        self,
        conn: Conn,
        commands: Sequence[tuple[Statement, dict[str, Any]]],
        make_row: Callable[[Sequence[Any]], R],
    ) -> list[R]:
        """Run ``commands`` as one READ COMMITTED transaction in one pipeline: one round trip.

        ``BEGIN``, the commands and ``COMMIT`` go before one Sync. Each command
        is a statement of its own, so under READ COMMITTED each takes a fresh
        snapshot (a conditional append's check sees what committed while its
        locks were awaited). At the first error the rest is skipped, the
        transaction is rolled back (one more round trip) and the error raised.
        The rows of the last command are returned; the others' are not loaded.
        """
        async with conn.lock:
            encoding = self._state(conn).encoding
            answers = await self._pipelined(conn, [(_BEGIN, {}), *commands, (_COMMIT, {})], encoding)
            pgconn = conn.pgconn
            failed = next(
                (res for answer in answers for res in answer if res.status == pq.ExecStatus.FATAL_ERROR), None
            )
            if failed is not None:
                if pgconn.transaction_status != pq.TransactionStatus.IDLE:
                    pgconn.send_query(b"ROLLBACK")
                    _one_result(await _results(conn), pq.ExecStatus.COMMAND_OK, encoding)
                raise psycopg.errors.error_from_result(failed, encoding=encoding)
            _one_result(answers[0], pq.ExecStatus.COMMAND_OK, encoding)
            _one_result(answers[-1], pq.ExecStatus.COMMAND_OK, encoding)
            res = _one_result(answers[-2], pq.ExecStatus.TUPLES_OK, encoding)
            loader = self._state(conn).loader
            loader.set_pgresult(res)
            try:
                return loader.load_rows(0, res.ntuples, make_row)
            finally:
                loader.set_pgresult(None)

    async def _pipelined(
        self, conn: Conn, commands: Sequence[tuple[Statement, dict[str, Any]]], encoding: str
    ) -> list[list[pq.abc.PGresult]]:
        """Send ``commands`` (each prepared first) before one Sync; each one's results (its lock held)."""
        for stmt in {stmt.name: stmt for stmt, _ in commands}.values():
            await self._prepare(conn, stmt, encoding)
        pgconn = conn.pgconn
        pgconn.enter_pipeline_mode()
        try:
            for stmt, params in commands:
                self._send(pgconn, stmt, params, encoding)
            pgconn.pipeline_sync()
            answers = await _collect_pipeline(pgconn, len(commands))
            pgconn.exit_pipeline_mode()
        except BaseException:
            # Mid-pipeline the connection cannot be handed back as it is.
            pgconn.finish()
            raise
        return answers

    async def _prepare(self, conn: Conn, stmt: Statement, encoding: str) -> None:
        prepared = self._state(conn).prepared
        if stmt.name not in prepared:
            conn.pgconn.send_prepare(stmt.name, stmt.text, param_types=list(stmt.types))
            # Already there: an earlier call prepared it but was interrupted before the answer.
            with contextlib.suppress(psycopg.errors.DuplicatePreparedStatement):
                _one_result(await _results(conn), pq.ExecStatus.COMMAND_OK, encoding)
            prepared.add(stmt.name)

    @staticmethod
    def _send(pgconn: pq.abc.PGconn, stmt: Statement, params: dict[str, Any], encoding: str) -> None:
        values = [params[p] for p in stmt.params]
        pgconn.send_query_prepared(
            stmt.name,
            [v if v is None or isinstance(v, bytes) else str(v).encode(encoding) for v in values],
            param_formats=stmt.formats,
            result_format=pq.Format.BINARY,
        )


def _one_result(results: list[pq.abc.PGresult], status: pq.ExecStatus, encoding: str) -> pq.abc.PGresult:
    """The result of the one command sent, or its error raised as psycopg raises it."""
    for res in results:
        if res.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(res, encoding=encoding)
    if len(results) != 1 or results[0].status != status:
        raise psycopg.InterfaceError(
            f"unexpected result from PostgreSQL: {[pq.ExecStatus(r.status).name for r in results]}"
        )
    return results[0]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _ready(loop: asyncio.AbstractEventLoop, fileno: int, *, write: bool) -> None:
    """Wait until the socket can be written (``write``) or read."""
    fut = loop.create_future()
    if write:
        loop.add_writer(fileno, _wake, fut)
    else:
        loop.add_reader(fileno, _wake, fut)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fileno)
        else:
            loop.remove_reader(fileno)


async def _collect(pgconn: pq.abc.PGconn) -> list[pq.abc.PGresult]:
    """Send what libpq holds for the connection and gather the results of the command in flight."""
    loop = asyncio.get_running_loop()
    try:
        fileno = pgconn.socket
        while pgconn.flush():
            await _ready(loop, fileno, write=True)
        results: list[pq.abc.PGresult] = []
        while True:
            while pgconn.is_busy():
                await _ready(loop, fileno, write=False)
                pgconn.consume_input()
            res = pgconn.get_result()
            if res is None:
                return results
            results.append(res)
    except OSError as exc:  # the socket went away under the loop
        raise psycopg.OperationalError(f"connection socket closed: {exc}") from exc


async def _results(conn: Conn) -> list[pq.abc.PGresult]:
    """The results of the command just sent on ``conn`` (whose lock the caller holds).

    Interrupted while the statement runs (the calling task cancelled), it does
    what psycopg does: cancel the statement on the server and read what is
    left, so that the connection goes back to the pool idle; if that fails
    too, the connection is closed (the pool then replaces it).
    """
    pgconn = conn.pgconn
    try:
        return await _collect(pgconn)
    except BaseException:
        if pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
            try:
                await conn.cancel_safe(timeout=5.0)
                async with asyncio.timeout(5.0):
                    await _collect(pgconn)
            except BaseException as exc:  # noqa: BLE001 - the connection is closed instead
                log.warning("interrupted statement not cancelled (%s): closing its connection", reason(exc))
                pgconn.finish()
        raise


async def _collect_pipeline(pgconn: pq.abc.PGconn, commands: int) -> list[list[pq.abc.PGresult]]:
    """Send a pipeline of ``commands`` and a sync, and gather each command's results, up to the sync."""
    loop = asyncio.get_running_loop()
    try:
        fileno = pgconn.socket
        while pgconn.flush():
            await _ready(loop, fileno, write=True)
        gathered: list[list[pq.abc.PGresult]] = []
        current: list[pq.abc.PGresult] = []
        while True:
            if pgconn.is_busy():
                await _ready(loop, fileno, write=False)
                pgconn.consume_input()
                continue
            res = pgconn.get_result()
            if res is None:
                if current:  # the end of one command's results
                    gathered.append(current)
                    current = []
                    continue
                if pgconn.status == pq.ConnStatus.BAD:
                    raise psycopg.OperationalError(
                        f"the connection was lost mid-pipeline: {pgconn.get_error_message()}"
                    )
                # Nothing more to read yet.
                await _ready(loop, fileno, write=False)
                pgconn.consume_input()
            elif res.status == pq.ExecStatus.PIPELINE_SYNC:
                if len(gathered) != commands or current:  # pragma: no cover - libpq's protocol
                    raise psycopg.InterfaceError(
                        f"a pipeline of {commands} commands answered {len(gathered)} before its sync"
                    )
                return gathered
            else:
                current.append(res)
    except OSError as exc:  # the socket went away under the loop
        raise psycopg.OperationalError(f"connection socket closed: {exc}") from exc


# -- the statements that take this path ------------------------------------------------

_BEGIN: Final = statement("eventvault_begin_read_committed", b"BEGIN ISOLATION LEVEL READ COMMITTED", (), ())
_COMMIT: Final = statement("eventvault_commit", b"COMMIT", (), ())

_APPEND_PARAMS: Final = ("stream_id", "n", "expected", "ids", "types", "versions", "occurred", "data", "meta")
# All typed, used or not, so that one list of values fits every kind: text, int8,
# int8, then array literals typed by the statement's own casts.
_APPEND_TYPES: Final = (TEXT, INT8, INT8, INFERRED, INFERRED, INFERRED, INFERRED, INFERRED, INFERRED)
# A one-event append takes scalars instead: the payload and metadata as bytea, in binary.
_APPEND_ONE_TYPES: Final = (TEXT, INT8, INT8, INFERRED, TEXT, INFERRED, INFERRED, BYTEA, BYTEA)
_READ_PARAMS: Final = ("stream_id", "from", "to", "as_of", "limit", "rules")
_READ_TYPES: Final = (TEXT, INT8, INT8, INT8, INT8, BOOL)


# A conditional append (``_dcb.append_sql``): the append's parameters, its events'
# tags, then its condition's (``after`` and each item's types and tags).
_DCB_APPEND_PARAMS: Final = (*_APPEND_PARAMS, "tags")
_DCB_APPEND_TYPES: Final = (*_APPEND_TYPES, INFERRED)


def dcb_append_statement(query: bytes, condition_params: tuple[str, ...]) -> Statement:
    """A conditional append composed by ``_dcb``, named by its text (its shapes are composed on demand)."""
    name = "eventvault_dcb_" + hashlib.blake2b(query, digest_size=8).hexdigest()
    types = (*_DCB_APPEND_TYPES, *(INT8 if p == "after" else INFERRED for p in condition_params))
    return statement(name, query, (*_DCB_APPEND_PARAMS, *condition_params), types)


def dcb_lock_statement(query: bytes) -> Statement:
    """``dcb_lock()``'s call: whether the whole log is locked, the tag keys, whether each is exclusive."""
    return statement(
        "eventvault_dcb_lock", query, ("whole_log", "keys", "exclusive"), (BOOL, INFERRED, INFERRED)
    )


class HotStatements(NamedTuple):
    """The statements that take this path, by the text the cursor would run them as."""

    appends: dict[bytes, Statement]
    read_stream: dict[bytes, Statement]
    notify: Statement


def hot_statements(
    appends: dict[tuple[str, bool], bytes], read_stream: dict[tuple[bool, bool], bytes], notify: bytes
) -> HotStatements:
    """The appends, stream reads and the notification of one schema, as this module runs them."""
    return HotStatements(
        appends={
            query: statement(
                f"eventvault_append_{kind}{'_one' if single else ''}",
                query,
                _APPEND_PARAMS,
                _APPEND_ONE_TYPES if single else _APPEND_TYPES,
                frozenset({"data", "meta"}) if single else frozenset(),
            )
            for (kind, single), query in appends.items()
        },
        read_stream={
            query: statement(
                "eventvault_read_stream" + ("_backwards" if backwards else "") + ("_as_of" if as_of else ""),
                query,
                _READ_PARAMS,
                _READ_TYPES,
            )
            for (backwards, as_of), query in read_stream.items()
        },
        notify=statement("eventvault_notify", notify, ("channel",), (TEXT,)),
    )
