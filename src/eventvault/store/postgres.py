"""``postgresql://``: the event store on PostgreSQL (psycopg 3, an async connection pool).

::

    store = await open_store("postgresql://app@db.internal/ledger?schema=ledger&pool_max=20")

The global log, and why it is ordered by transaction id
-------------------------------------------------------
Positions come from an identity column: they are handed out when a row is
inserted, not when its transaction commits. With concurrent writers a reader
that follows positions alone can see position 11 committed while position 10
is still in flight; it moves its checkpoint past 10 and never sees it. Taking a
table lock around every append would fix that by letting only one writer in at
a time. This store keeps writers concurrent instead:

* every row records ``pg_current_xact_id()`` (xid8) of the transaction that
  wrote it, in ``tx_id``;
* every transaction that writes events holds the schema's writers' lock (a
  shared transaction-level advisory lock), taken before its first write;
* a reader only returns rows with ``tx_id`` below the read horizon: the oldest
  transaction still running that holds that lock (``read_horizon()``, created
  by the schema's migrations; decision 0018 says why the order of its reads is
  safe). Every event writer below it has finished, so the set of rows below it
  is final: nothing can still commit there;
* the log is ordered, and checkpoints compare, by ``(tx_id, position)``. A
  checkpoint is below the horizon of the read that produced it, so every row
  that commits later sorts after it. Ordering by position alone would not be
  safe, because a transaction with a low id can insert (and get positions) after
  one with a higher id has committed.

The price: an event writer that stays open (a stuck append, an ``append_on``
transaction left idle) holds the horizon back, and readers wait for it; a
transaction elsewhere in the cluster, or on other tables, does not.
They are delayed, never wrong. See ``docs/postgres.md``.

Writers
-------
An append is one SQL statement in its own (autocommit) transaction: it bumps the
stream's row in ``streams`` under the expected-version condition (which locks
that one row, so appends to different streams never wait for each other), and
inserts the events. A conflict (wrong version, an event id already stored) makes
that statement fail and nothing else; the idempotency check then runs on the
conflict path only (see :func:`~eventvault.store.base.idempotent_result`).
The store runs it as a statement prepared on each of its connections, through
libpq directly (see ``_execute_prepared``), and one event goes in scalar
parameters rather than arrays. While ``append_concurrency`` appends are in
flight, the appends made meanwhile wait and then go together: their statements
in one pipeline, one transaction, one round trip (see ``_append_group``).

Wake-ups
--------
After an append commits the store sends ``pg_notify`` on the schema's channel,
coalesced (at most one in flight per store, and at most one per ``notify_debounce``,
which listeners wait after one anyway) and in its own transaction, committed
without waiting for the WAL flush (a hint may be lost; readers poll too).
NOTIFY inside the appending transaction would take PostgreSQL's database-wide
notify lock before that transaction's commit record is flushed, serializing the
commits of all concurrent writers (measured with pgbench, 32 clients inserting one
row per transaction: 17,000-28,000 transactions/s without, 3,000-4,000 with NOTIFY
in the transaction). A notification is only a hint: readers always poll too
(:meth:`~eventvault.store.base.EventStore.wait_for_events`), so a lost one only delays them.

Options (URL query parameters or keyword arguments)
---------------------------------------------------
``schema`` (default ``eventvault``), ``pool_min`` (1), ``pool_max`` (10),
``pool_timeout`` (5.0 s to wait for a connection), ``poll_interval`` (1.0 s),
``notify`` (true), ``notify_debounce`` (0.005 s), ``append_concurrency`` (2),
and any libpq connection
parameter (``sslmode``, ``connect_timeout``, ``application_name``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final, NamedTuple, Self, TypeVar

import psycopg
import psycopg.errors
from psycopg import pq, sql
from psycopg.abc import Buffer
from psycopg.abc import Transformer as RowLoader
from psycopg.adapt import Loader, Transformer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from eventvault.domain import EventRegistry
from eventvault.errors import (
    InvalidStoreURL,
    SchemaVersionError,
    StorageFull,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)
from eventvault.store.base import (
    EventStore,
    Found,
    PreparedEvent,
    check_version_matches,
    idempotent_result,
)
from eventvault.store.records import (
    ANY,
    NO_STREAM,
    START,
    STREAM_EXISTS,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    HorizonLag,
    LogPage,
    RecordedEvent,
    Snapshot,
)

__all__ = ["HorizonLag", "PostgresEventStore"]

log = logging.getLogger("eventvault.store.postgres")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

SCHEMA_VERSION: Final = 3
"""The schema version this code creates and understands."""

_SCHEMA_NAME = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,62}")
_XID8_OID: Final = 5069
# Versions above this are never used; it stands for "no upper bound" in SQL.
_NO_LIMIT: Final = 2**62
_MAX_CONFLICT_ROUNDS: Final = 5
# The most appends one transaction carries when appends wait for one another.
_GROUP_MAX: Final = 64
# How long a call waits for a connection while the server is known to be away.
_OUTAGE_TIMEOUT: Final = 0.5
# How long one pooled connection may stay kept aside for the next call (see _release).
_SPARE_SECONDS: Final = 10.0

# libpq parameters are passed through; "replication" would turn the session into
# a walsender that cannot run SQL, so it is not one of them.
_LIBPQ_KEYS: Final = frozenset(
    o.keyword.decode() for o in pq.Conninfo.get_defaults() if o.keyword != b"replication"
)


# -- options -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Options:
    schema: str = "eventvault"
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout: float = 5.0
    poll_interval: float = 1.0
    notify: bool = True
    notify_debounce: float = 0.005
    append_concurrency: int = 2


_OWN_KEYS: Final = frozenset(_Options.__dataclass_fields__)


def _as_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InvalidStoreURL(f"option {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidStoreURL(f"option {name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidStoreURL(f"option {name} must be >= {minimum}, got {value}")
    return value


def _as_float(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidStoreURL(f"option {name} must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidStoreURL(f"option {name} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not (seconds > 0 if positive else seconds >= 0) or seconds == float("inf"):
        bound = "> 0" if positive else ">= 0"
        raise InvalidStoreURL(f"option {name} must be a finite number of seconds {bound}, got {value!r}")
    return seconds


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidStoreURL(f"option {name} must be true or false, got {value!r}")


def _parse_options(options: Mapping[str, Any]) -> tuple[_Options, dict[str, Any]]:
    unknown = sorted(k for k in options if k not in _OWN_KEYS and k not in _LIBPQ_KEYS)
    if unknown:
        raise InvalidStoreURL(
            f"unknown postgresql:// option(s) {unknown}; this store takes {sorted(_OWN_KEYS)} "
            "and libpq connection parameters"
        )
    libpq: dict[str, Any] = {}
    for key in options.keys() & _LIBPQ_KEYS:
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidStoreURL(f"libpq option {key} must be a str or an int, got {value!r}")
        libpq[key] = str(value)
    defaults = _Options()
    schema = options.get("schema", defaults.schema)
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidStoreURL(
            "option schema must be a lower-case SQL identifier of at most 63 characters "
            f"(letters, digits, '_'; not starting with a digit or 'pg_'), got {schema!r}"
        )
    parsed = _Options(
        schema=schema,
        pool_min=_as_int("pool_min", options.get("pool_min", defaults.pool_min), 0),
        pool_max=_as_int("pool_max", options.get("pool_max", defaults.pool_max), 1),
        pool_timeout=_as_float(
            "pool_timeout", options.get("pool_timeout", defaults.pool_timeout), positive=True
        ),
        poll_interval=_as_float(
            "poll_interval", options.get("poll_interval", defaults.poll_interval), positive=True
        ),
        notify=_as_bool("notify", options.get("notify", defaults.notify)),
        notify_debounce=_as_float(
            "notify_debounce", options.get("notify_debounce", defaults.notify_debounce), positive=False
        ),
        append_concurrency=_as_int(
            "append_concurrency", options.get("append_concurrency", defaults.append_concurrency), 1
        ),
    )
    if parsed.pool_min > parsed.pool_max:
        raise InvalidStoreURL(
            f"option pool_min ({parsed.pool_min}) must not exceed pool_max ({parsed.pool_max})"
        )
    return parsed, libpq


# -- SQL -----------------------------------------------------------------------


# The writers' lock: every transaction that writes events holds it (shared, until it
# ends), taken before its first write, so a transaction that does not hold it has
# never written an event (see read_horizon below and docs/decisions/0018). A pair of
# int4 keys: the first names eventvault's writers, the second the schema.
_WRITERS_CLASS: Final = 0x65765772  # "evWr"


def _writers_key(schema: str) -> int:
    digest = hashlib.blake2b(f"eventvault writers {schema}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _take_writers_lock(schema: str) -> sql.Composed:
    return sql.SQL("pg_advisory_xact_lock_shared({}, {})").format(
        sql.Literal(_WRITERS_CLASS), sql.Literal(_writers_key(schema))
    )


def _holds_writers_lock(schema: str, who: sql.Composable) -> sql.Composed:
    """A condition on a pg_locks row (``who`` names it): it is the writers' lock of ``schema`` here."""
    return sql.SQL(
        "{who}.locktype = 'advisory' AND {who}.classid = {cls} AND {who}.objid = {key} "
        "AND {who}.objsubid = 2 "
        "AND {who}.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
    ).format(who=who, cls=sql.Literal(_WRITERS_CLASS), key=sql.Literal(_writers_key(schema)))


def _read_horizon_function(s: sql.Identifier, schema: str) -> sql.Composed:
    # STABLE, not VOLATILE: its statements then run in the calling statement's
    # snapshot (a volatile function takes a new one per statement), so the
    # horizon is computed from the very snapshot the caller reads rows with.
    return sql.SQL(
        """
        CREATE OR REPLACE FUNCTION {s}.read_horizon() RETURNS xid8
        LANGUAGE plpgsql STABLE AS $fn$
        DECLARE
            snap pg_snapshot := pg_current_snapshot();
            writers xid[];
            horizon xid8;
        BEGIN
            -- Nothing committed is held back by the oldest running transaction:
            -- the plain horizon loses nothing, and costs one index probe.
            IF NOT EXISTS (SELECT 1 FROM {s}.events WHERE tx_id >= pg_snapshot_xmin(snap)) THEN
                RETURN pg_snapshot_xmin(snap);
            END IF;
            -- Then, after the snapshot was taken: the transactions holding the
            -- writers' lock, from one look at the lock table (the lock and the
            -- transaction id rows of one transaction share its virtualtransaction).
            WITH locks AS MATERIALIZED (
                SELECT locktype, database, classid, objid, objsubid, virtualtransaction, transactionid
                FROM pg_catalog.pg_locks)
            SELECT array_agg(t.transactionid) INTO writers
            FROM locks AS a JOIN locks AS t ON t.virtualtransaction = a.virtualtransaction
            WHERE {holds} AND t.locktype = 'transactionid';
            -- And after that look: a transaction that was running in the snapshot
            -- is left out only if it still runs and holds no writers' lock. One
            -- that ended in between may have written events the snapshot cannot
            -- see, so it counts, as every lock holder does.
            SELECT min(x) INTO horizon FROM pg_snapshot_xip(snap) AS x
            WHERE x::xid = ANY(writers) OR pg_xact_status(x) IS DISTINCT FROM 'in progress';
            RETURN coalesce(horizon, pg_snapshot_xmax(snap));
        END
        $fn$"""
    ).format(s=s, holds=_holds_writers_lock(schema, sql.Identifier("a")))


def _migrations(s: sql.Identifier, schema: str) -> list[tuple[int, str, list[sql.Composed]]]:
    """Each schema version: its number, a description and the statements that make it."""
    return [
        (
            1,
            "streams, events ordered by (tx_id, position), snapshots",
            [
                sql.SQL(
                    """
                    CREATE TABLE {s}.streams (
                        stream_id text PRIMARY KEY,
                        -- the version of the stream's last event: appends lock and bump
                        -- this one row, which is all that serializes writers of a stream
                        version bigint NOT NULL CHECK (version > 0)
                    )"""
                ).format(s=s),
                sql.SQL(
                    """
                    CREATE TABLE {s}.events (
                        -- the writing transaction: readers only read below the xmin
                        -- horizon and order by (tx_id, position); see the module docs
                        tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
                        position bigint GENERATED ALWAYS AS IDENTITY,
                        event_id uuid NOT NULL,
                        stream_id text NOT NULL,
                        stream_version bigint NOT NULL,
                        event_type text NOT NULL,
                        schema_version integer NOT NULL,
                        -- integer microseconds since the Unix epoch, as the core keeps
                        -- them: exact round trips with no session time zone involved,
                        -- and no datetime objects built per row on the hot read path
                        -- (to_timestamp(recorded_us / 1e6) shows them in SQL)
                        occurred_us bigint NOT NULL,
                        recorded_us bigint NOT NULL,
                        -- the JSON bytes exactly as encoded: upcasting reads the stored
                        -- shape back unchanged (jsonb would reorder keys); in SQL,
                        -- convert_from(data, 'UTF8')::jsonb
                        data bytea NOT NULL,
                        metadata bytea NOT NULL,
                        -- a page of the log is a range scan of this index
                        CONSTRAINT events_log_order PRIMARY KEY (tx_id, position),
                        CONSTRAINT events_event_id UNIQUE (event_id),
                        CONSTRAINT events_stream_version UNIQUE (stream_id, stream_version)
                    )"""
                ).format(s=s),
                sql.SQL(
                    """
                    CREATE TABLE {s}.snapshots (
                        stream_id text NOT NULL,
                        schema_version bigint NOT NULL,
                        stream_version bigint NOT NULL,
                        state bytea NOT NULL,
                        created_at timestamptz NOT NULL,
                        PRIMARY KEY (stream_id, schema_version)
                    )"""
                ).format(s=s),
            ],
        ),
        (
            2,
            "index events by position, for checkpoint_at",
            [
                # Callers that kept only a position (an HTTP client's consistency
                # token) ask for its checkpoint: one index probe, not a scan.
                sql.SQL("CREATE UNIQUE INDEX events_position ON {s}.events (position)").format(s=s),
            ],
        ),
        (
            3,
            "read_horizon(): readers wait only for transactions that write events",
            [_read_horizon_function(s, schema)],
        ),
    ]


_EVENT_COLUMNS: Final = sql.SQL(
    "event_id, stream_id, stream_version, position, event_type, schema_version, "
    "occurred_us, recorded_us, data, metadata, tx_id"
)


def _horizon(s: sql.Identifier) -> sql.Composed:
    """The read horizon, once per statement (an uncorrelated subquery runs once)."""
    return sql.SQL("(SELECT {s}.read_horizon())").format(s=s)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The store's SQL, composed once per schema and kept as bytes (psycopg prepares them)."""

    appends: dict[tuple[str, bool], bytes]
    """The append statements, by the expected version's kind and whether it is of one event."""
    prepared: dict[bytes, _Prepared]
    """The statements the store prepares on its own connections: each append, the notify."""
    lookup_ids: bytes
    stream_version: bytes
    read_stream: dict[tuple[bool, bool], _Prepared]
    """Stream reads by (backwards, as_of), as the store prepares them on its own connections."""
    read_all: bytes
    read_all_filtered: bytes
    head: bytes
    checkpoint_at: bytes
    max_tx: bytes
    save_snapshot: bytes
    load_snapshot: bytes
    notify: bytes
    horizon_lag: bytes
    declare_writer: bytes


def _append_sql(s: sql.Identifier, writer: sql.Composable, bump: sql.Composable, *, single: bool) -> bytes:
    # One statement: lock and bump the stream row (`bump` returns nothing when the
    # expected version does not hold), then insert the events numbered from it.
    # clock_timestamp() is read once, in the RETURNING of the bump, i.e. after the
    # row lock is granted: one recorded time for the whole append (so a temporal
    # read never shows half of it), and never earlier than the previous append to
    # the stream, which had committed before the lock was released.
    # tx_id is returned as int8 (via text: xid8 has no numeric cast), so that any
    # connection can run this, with or without the store's xid8 loader.
    if single:
        # One event, in scalar parameters: the server runs this in well under the
        # time it takes to unnest, sort and re-read arrays of one element
        # (measured: 60-130 us less per append).
        return (
            sql.SQL(
                """
                WITH {writer}, bump AS ({bump}
                    RETURNING version, (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now_us)
                INSERT INTO {s}.events (event_id, stream_id, stream_version, event_type,
                                        schema_version, occurred_us, recorded_us, data, metadata)
                SELECT %(ids)s::uuid, %(stream_id)s, bump.version, %(types)s::text,
                       %(versions)s::int4, %(occurred)s::int8, bump.now_us, %(data)s::bytea, %(meta)s::bytea
                FROM bump
                RETURNING position, tx_id::text::int8, stream_version"""
            )
            .format(s=s, writer=writer, bump=bump)
            .as_bytes(None)
        )
    return (
        sql.SQL(
            """
            WITH {writer}, bump AS ({bump}
                RETURNING version, (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now_us),
            ins AS (
                INSERT INTO {s}.events (event_id, stream_id, stream_version, event_type,
                                        schema_version, occurred_us, recorded_us, data, metadata)
                SELECT u.event_id, %(stream_id)s, bump.version - %(n)s + u.ord, u.event_type,
                       u.schema_version, u.occurred_us, bump.now_us, u.data, u.metadata
                FROM bump,
                     unnest(%(ids)s::uuid[], %(types)s::text[], %(versions)s::int4[],
                            %(occurred)s::int8[], %(data)s::bytea[], %(meta)s::bytea[])
                         WITH ORDINALITY AS u(event_id, event_type, schema_version, occurred_us,
                                              data, metadata, ord)
                ORDER BY u.ord
                RETURNING position, tx_id, stream_version)
            SELECT position, tx_id::text::int8, stream_version FROM ins ORDER BY position"""
        )
        .format(s=s, writer=writer, bump=bump)
        .as_bytes(None)
    )


class _Prepared(NamedTuple):
    """A statement as the store prepares it on its own connections (see ``_execute_prepared``)."""

    name: bytes
    text: bytes
    """With ``$n`` placeholders."""
    types: tuple[int, ...]
    """The parameters' type oids (0: the server infers it)."""
    formats: tuple[int, ...] | None
    """The parameters' formats (None: all text)."""
    status: pq.ExecStatus
    """What a result of it is."""


# The parameters of an append statement, in the order of their ``$n`` when the
# store prepares it on its own connections, and their types: text, int8, int8,
# then the array literals, typed by the casts in the statement itself.
_APPEND_PARAMS: Final = ("stream_id", "n", "expected", "ids", "types", "versions", "occurred", "data", "meta")
_APPEND_TYPES: Final = (25, 20, 20, 0, 0, 0, 0, 0, 0)
# A one-event append takes scalars instead: the payload and metadata as bytea, in binary.
_APPEND_ONE_TYPES: Final = (25, 20, 20, 0, 25, 0, 0, 17, 17)
_APPEND_ONE_FORMATS: Final = (0, 0, 0, 0, 0, 0, 0, 1, 1)


# A stream read's parameters, likewise: the stream id, then int8s (limit may be NULL: none).
_READ_PARAMS: Final = ("stream_id", "from", "to", "as_of", "limit")
_READ_TYPES: Final = (25, 20, 20, 20, 20)


def _positional(query: bytes, names: tuple[str, ...] = _APPEND_PARAMS) -> bytes:
    """``query`` with its ``%(name)s`` placeholders as ``$n``, numbered as in ``names``."""
    for number, name in enumerate(names, start=1):
        query = query.replace(b"%(" + name.encode() + b")s", b"$%d" % number)
    if b"%" in query:  # pragma: no cover - the statements above use no other placeholder
        raise AssertionError(f"unexpected placeholder left in {query!r}")
    return query


# A notification is a hint: its transaction need not wait for the WAL to
# reach the disk (NOTIFY takes a transaction id, so committing it would
# otherwise cost one more flush per append). The setting is local to
# this one-statement transaction and applies to its commit.
_NOTIFY: Final = b"SELECT set_config('synchronous_commit', 'off', true), pg_notify(%s, '')"


@cache
def _statements(schema: str) -> _Statements:
    s = sql.Identifier(schema)
    # The writers' lock comes first: every bump reads the one row of `writer`, so
    # the lock is held before the statement writes anything (and so before the
    # transaction has an id to leave in tx_id).
    writer = sql.SQL("writer AS MATERIALIZED (SELECT {lock})").format(lock=_take_writers_lock(schema))
    insert_stream = sql.SQL(
        "INSERT INTO {s}.streams AS st (stream_id, version) SELECT %(stream_id)s, %(n)s FROM writer"
    ).format(s=s)
    read_stream: dict[tuple[bool, bool], bytes] = {}
    for backwards in (False, True):
        for as_of in (False, True):
            upper = (
                sql.SQL(
                    "LEAST(%(to)s, (SELECT coalesce(max(stream_version), 0) FROM {s}.events "
                    "WHERE stream_id = %(stream_id)s AND recorded_us <= %(as_of)s))"
                ).format(s=s)
                if as_of
                else sql.SQL("%(to)s")
            )
            read_stream[backwards, as_of] = (
                sql.SQL(
                    "SELECT {cols} FROM {s}.events WHERE stream_id = %(stream_id)s "
                    "AND stream_version >= %(from)s AND stream_version <= {upper} "
                    "ORDER BY stream_version {direction} LIMIT %(limit)s"
                )
                .format(
                    cols=_EVENT_COLUMNS,
                    s=s,
                    upper=upper,
                    direction=sql.SQL("DESC" if backwards else "ASC"),
                )
                .as_bytes(None)
            )
    page_where = sql.SQL(
        "(tx_id, position) > (%(tx)s::xid8, %(position)s::int8) AND tx_id < {horizon}"
    ).format(horizon=_horizon(s))
    bumps = {
        "new": sql.SQL("{} ON CONFLICT (stream_id) DO NOTHING").format(insert_stream),
        "any": sql.SQL(
            "{} ON CONFLICT (stream_id) DO UPDATE SET version = st.version + excluded.version"
        ).format(insert_stream),
        "exact": sql.SQL(
            "UPDATE {s}.streams SET version = version + %(n)s FROM writer "
            "WHERE stream_id = %(stream_id)s AND version = %(expected)s"
        ).format(s=s),
        "exists": sql.SQL(
            "UPDATE {s}.streams SET version = version + %(n)s FROM writer WHERE stream_id = %(stream_id)s"
        ).format(s=s),
    }
    appends = {
        (kind, single): _append_sql(s, writer, bump, single=single)
        for kind, bump in bumps.items()
        for single in (False, True)
    }
    return _Statements(
        appends=appends,
        prepared={
            **{
                query: _Prepared(
                    f"eventvault_append_{kind}{'_one' if single else ''}".encode(),
                    _positional(query),
                    _APPEND_ONE_TYPES if single else _APPEND_TYPES,
                    _APPEND_ONE_FORMATS if single else None,
                    pq.ExecStatus.TUPLES_OK,
                )
                for (kind, single), query in appends.items()
            },
            _NOTIFY: _Prepared(
                b"eventvault_notify", _NOTIFY.replace(b"%s", b"$1"), (25,), None, pq.ExecStatus.TUPLES_OK
            ),
        },
        lookup_ids=sql.SQL(
            "SELECT event_id, stream_id, stream_version, position, tx_id::text::int8 FROM {s}.events "
            "WHERE event_id = ANY(%s::uuid[])"
        )
        .format(s=s)
        .as_bytes(None),
        stream_version=sql.SQL("SELECT version FROM {s}.streams WHERE stream_id = %s")
        .format(s=s)
        .as_bytes(None),
        read_stream={
            (backwards, as_of): _Prepared(
                b"eventvault_read_stream"
                + (b"_backwards" if backwards else b"")
                + (b"_as_of" if as_of else b""),
                # all typed, used or not, so that one list of values fits all four
                _positional(query, _READ_PARAMS),
                _READ_TYPES,
                None,
                pq.ExecStatus.TUPLES_OK,
            )
            for (backwards, as_of), query in read_stream.items()
        },
        read_all=sql.SQL(
            "SELECT {cols} FROM {s}.events WHERE {where} ORDER BY tx_id, position LIMIT %(limit)s"
        )
        .format(cols=_EVENT_COLUMNS, s=s, where=page_where)
        .as_bytes(None),
        # A filtered page also returns the last event below the same horizon (one
        # statement, one snapshot, the horizon taken once), so that a short page
        # can move the checkpoint past the events it filtered out, and no further.
        read_all_filtered=sql.SQL(
            """
            WITH horizon AS MATERIALIZED (SELECT {s}.read_horizon() AS xmin),
            page AS (
                SELECT {cols} FROM {s}.events
                WHERE (tx_id, position) > (%(tx)s::xid8, %(position)s::int8)
                  AND tx_id < (SELECT xmin FROM horizon)
                  AND event_type = ANY(%(types)s::text[])
                ORDER BY tx_id, position LIMIT %(limit)s),
            head AS (
                SELECT tx_id, position FROM {s}.events WHERE tx_id < (SELECT xmin FROM horizon)
                ORDER BY tx_id DESC, position DESC LIMIT 1)
            SELECT page.*, head.tx_id, head.position
            FROM head LEFT JOIN page ON true
            ORDER BY page.tx_id, page.position"""
        )
        .format(cols=_EVENT_COLUMNS, s=s)
        .as_bytes(None),
        head=sql.SQL(
            "SELECT tx_id, position FROM {s}.events WHERE tx_id < {horizon} "
            "ORDER BY tx_id DESC, position DESC LIMIT 1"
        )
        .format(s=s, horizon=_horizon(s))
        .as_bytes(None),
        # Only a readable event has a checkpoint yet: below the horizon, as in read_all.
        checkpoint_at=sql.SQL("SELECT tx_id FROM {s}.events WHERE position = %s AND tx_id < {horizon}")
        .format(s=s, horizon=_horizon(s))
        .as_bytes(None),
        max_tx=sql.SQL("SELECT (SELECT max(tx_id) FROM {s}.events), pg_snapshot_xmax(pg_current_snapshot())")
        .format(s=s)
        .as_bytes(None),
        save_snapshot=sql.SQL(
            "INSERT INTO {s}.snapshots AS sn (stream_id, schema_version, stream_version, state, created_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stream_id, schema_version) DO UPDATE "
            "SET stream_version = excluded.stream_version, state = excluded.state, "
            "created_at = excluded.created_at "
            # an older snapshot (a lower version) never replaces a newer one
            "WHERE sn.stream_version <= excluded.stream_version"
        )
        .format(s=s)
        .as_bytes(None),
        load_snapshot=sql.SQL(
            "SELECT stream_version, state, created_at FROM {s}.snapshots "
            "WHERE stream_id = %s AND schema_version = %s"
        )
        .format(s=s)
        .as_bytes(None),
        notify=_NOTIFY,
        # The transaction holding the horizon, if one does: the event writer whose
        # id the horizon is (an id below the snapshot's xmax is a running one).
        horizon_lag=sql.SQL(
            """
            WITH h AS MATERIALIZED (
                SELECT {s}.read_horizon() AS xmin, pg_snapshot_xmax(pg_current_snapshot()) AS xmax)
            SELECT (SELECT count(*) FROM {s}.events WHERE tx_id >= h.xmin),
                   a.pid, a.state, a.datname,
                   extract(epoch FROM clock_timestamp() - a.xact_start)::float8, a.xact_start
            FROM h LEFT JOIN pg_catalog.pg_stat_activity AS a
                ON h.xmin < h.xmax AND a.backend_xid = h.xmin::xid"""
        )
        .format(s=s)
        .as_bytes(None),
        # Joins the caller's transaction to the writers (append_on): false, and no
        # lock taken, when it already has a transaction id but not the lock, i.e.
        # it wrote before it was declared a writer (CASE runs only the branch chosen).
        declare_writer=sql.SQL(
            """
            SELECT CASE
                WHEN pg_current_xact_id_if_assigned() IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_locks AS l
                    WHERE l.pid = pg_backend_pid() AND l.granted AND {holds})
                THEN false
                ELSE (SELECT true FROM (SELECT {lock}) AS taken)
            END"""
        )
        .format(holds=_holds_writers_lock(schema, sql.Identifier("l")), lock=_take_writers_lock(schema))
        .as_bytes(None),
    )


class _Xid8Loader(Loader):
    def load(self, data: Buffer) -> int:
        return int(bytes(data))


class _Xid8BinaryLoader(Loader):
    format = pq.Format.BINARY

    def load(self, data: Buffer) -> int:
        return int.from_bytes(data, "big")


def _adapt(conn: Conn) -> None:
    conn.adapters.register_loader(_XID8_OID, _Xid8Loader)
    conn.adapters.register_loader(_XID8_OID, _Xid8BinaryLoader)


def _quoted(text: str) -> str:
    """``text`` as one element of a PostgreSQL array literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bytea(data: bytes) -> str:
    """``data`` as one element of a bytea[] array literal (hex input, its backslash escaped)."""
    return '"\\\\x' + data.hex() + '"'


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"eventvault migrate {schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# Class 40: the server rolled the transaction back (nothing was written); retrying helps.
_ROLLED_BACK: Final = (
    psycopg.errors.TransactionRollback,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)


def _lost(conn: Conn) -> bool:
    return conn.closed or conn.broken


# -- appends on the store's own connections: libpq directly --------------------------

_AppendValues = tuple[str, int, int | None, str, str, str | int, str | int, str | bytes, str | bytes]
"""An append statement's parameters, in the order of _APPEND_PARAMS."""


def _append_values(stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion) -> _AppendValues:
    version = expected if isinstance(expected, int) else None
    if len(events) == 1:
        [e] = events
        return (
            stream_id,
            1,
            version,
            str(e.event_id),
            e.event_type,
            e.schema_version,
            e.occurred_us,
            e.payload,
            e.metadata,
        )
    # Several events go as array literals in text, which the statement casts:
    # psycopg adapts a Python list element by element (about 85 us for a
    # one-event append, 220 us for ten, measured), far more than the server
    # takes to run the whole statement; joining the text costs a few us.
    return (
        stream_id,
        len(events),
        version,
        "{" + ",".join([str(e.event_id) for e in events]) + "}",
        "{" + ",".join([_quoted(e.event_type) for e in events]) + "}",
        "{" + ",".join([str(e.schema_version) for e in events]) + "}",
        "{" + ",".join([str(e.occurred_us) for e in events]) + "}",
        "{" + ",".join([_bytea(e.payload) for e in events]) + "}",
        "{" + ",".join([_bytea(e.metadata) for e in events]) + "}",
    )


@dataclass(slots=True)
class _ConnState:
    """What the store knows of one of its pooled connections."""

    encoding: str
    """The connection's client encoding, as a Python codec name."""
    prepared: set[bytes] = field(default_factory=set)
    """The names of the store's statements prepared on it."""
    rows: RowLoader | None = None
    """Loads rows of its results with the connection's loaders (made on first use)."""


def _int8(data: bytes | None) -> int:
    if data is None:  # pragma: no cover - the append statement returns no NULL
        raise psycopg.InterfaceError("unexpected NULL in an append's result")
    return int.from_bytes(data, "big", signed=True)


def _encoded(values: Sequence[str | int | bytes | None], encoding: str) -> list[bytes | None]:
    return [v if v is None or isinstance(v, bytes) else str(v).encode(encoding) for v in values]


def _append_result(stream_id: str, res: pq.abc.PGresult) -> AppendResult | None:
    """An append statement's result (None: it was refused)."""
    rows = res.ntuples
    if not rows:
        return None
    get = res.get_value
    positions = tuple([_int8(get(i, 0)) for i in range(rows)])
    return AppendResult(
        stream_id, _int8(get(rows - 1, 2)), positions, Checkpoint(_int8(get(rows - 1, 1)), positions[-1])
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
                log.warning("interrupted statement not cancelled (%s): closing its connection", _reason(exc))
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


class _Waiting(NamedTuple):
    """An append waiting to go with others in one transaction (see ``_append_group``)."""

    stream_id: str
    statement: _Prepared
    values: _AppendValues
    done: asyncio.Future[AppendResult | None]
    """Its result; None when it must run alone (refused, or the group failed)."""


# -- the store -----------------------------------------------------------------


class PostgresEventStore(EventStore):
    """The event store on PostgreSQL.

    ``conninfo`` is a ``postgresql://`` URL (without the query string) or a libpq
    ``key=value`` string. Options are listed in the module documentation; the
    schema is created or migrated on :meth:`open` (which the first call also does).
    """

    scheme = "postgresql"

    def __init__(self, conninfo: str, *, registry: EventRegistry | None = None, **options: Any) -> None:
        super().__init__(registry=registry)
        if not isinstance(conninfo, str):
            raise InvalidStoreURL(f"conninfo is a str, got {type(conninfo).__name__}")
        try:
            parts = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise InvalidStoreURL(f"not a PostgreSQL connection string: {_reason(exc)}") from None
        self._options, self._libpq = _parse_options(options)
        self._conninfo = conninfo
        self.schema = self._options.schema
        self.poll_interval = self._options.poll_interval
        self.channel = f"eventvault.{self.schema}"[:63]
        host = self._libpq.get("host", parts.get("host", "localhost"))
        port = self._libpq.get("port", parts.get("port", "5432"))
        dbname = self._libpq.get("dbname", parts.get("dbname", ""))
        self._target = f"PostgreSQL at {host}:{port}/{dbname} (schema {self.schema})"
        self._sql = _statements(self.schema)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._open_lock = asyncio.Lock()
        self._wakes = 0
        self._wake_handle: asyncio.TimerHandle | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._stopping = asyncio.Event()
        self._notify_task: asyncio.Task[None] | None = None
        self._notify_pending = False
        self._conn_states: weakref.WeakKeyDictionary[Conn, _ConnState] = weakref.WeakKeyDictionary()
        self._users = 0  # calls holding or waiting for a connection (see _acquire)
        self._spare: Conn | None = None  # a pooled connection kept aside for the next call
        self._spare_conn: Conn | None = None  # the connection last kept aside, until _spare_until
        self._spare_until = 0.0
        self._appending = 0  # appends in flight on the store's connections (see _append)
        self._waiting: list[_Waiting] = []  # appends waiting to go as one group
        self._groups: set[asyncio.Task[None]] = set()
        # Set when no connection could be had or a retried one died too; cleared
        # by the next call that succeeds (see _run).
        self._unreachable = False
        self._outage_timeout = min(self._options.pool_timeout, _OUTAGE_TIMEOUT)

    @property
    def conninfo(self) -> str:
        """The libpq connection string of this store's database (for read models beside it)."""
        return make_conninfo(self._conninfo, **self._libpq)

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> Self:
        """Create or migrate the schema and start the pool. Idempotent."""
        self._check_open()
        if self._pool is not None:
            return self
        async with self._open_lock:
            if self._pool is None:
                await self._migrate()
                pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                    self._conninfo,
                    kwargs={"autocommit": True, **self._libpq},
                    min_size=self._options.pool_min,
                    max_size=self._options.pool_max,
                    timeout=self._options.pool_timeout,
                    configure=self._configure,
                    name=f"eventvault-{self.schema}",
                    open=False,
                )
                await pool.open(wait=False)
                self._pool = pool
        return self

    async def close(self) -> None:
        """Stop the listener and any pending notification, and close the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        for task in (self._listener, self._notify_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._wake_all()
        # Groups of appends in flight finish (their callers wait for them); appends
        # still waiting run alone and find the store closed.
        await asyncio.gather(*self._groups, return_exceptions=True)
        if self._pool is not None:
            spare, self._spare, self._spare_conn = self._spare, None, None
            if spare is not None:
                await self._pool.putconn(spare)
            await self._pool.close()

    async def _configure(self, conn: Conn) -> None:
        _adapt(conn)

    async def _connect(self, what: str) -> Conn:
        """A connection outside the pool (migrations, the listener)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **self._libpq)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{what}: cannot connect to {self._target}: {_reason(exc)}") from exc
        _adapt(conn)
        return conn

    async def _migrate(self) -> None:
        conn = await self._connect("open")
        try:
            current = await self._schema_version(conn)
            if current != SCHEMA_VERSION:
                # Two processes may start at once: the advisory lock makes the
                # second wait, then find the schema current and do nothing.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(self.schema)])
                    current = await self._migrate_locked(conn)
            await self._check_xid_counter(conn)
        except psycopg.Error as exc:
            raise self._error(f"opening the schema on {self._target}", exc) from exc
        finally:
            await conn.close()
        log.debug("%s is at schema version %d", self._target, current)

    async def _schema_version(self, conn: Conn) -> int:
        table = f"{self.schema}.schema_migrations"
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        row = await cur.fetchone()
        if row is None or not row[0]:
            return 0
        cur = await conn.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(
                sql.Identifier(self.schema)
            )
        )
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        self._check_not_newer(version)
        return version

    def _check_not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self._target} holds event store schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this eventvault understands: upgrade eventvault"
            )

    async def _migrate_locked(self, conn: Conn) -> int:
        s = sql.Identifier(self.schema)
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version integer PRIMARY KEY, "
                "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(s)
        )
        current = await self._schema_version(conn)
        for version, description, statements in _migrations(s, self.schema):
            if version <= current:
                continue
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version, description) VALUES (%s, %s)").format(s),
                [version, description],
            )
            log.info("%s: applied schema migration %d (%s)", self._target, version, description)
            current = version
        return current

    async def _check_xid_counter(self, conn: Conn) -> None:
        # The log's order is tied to this cluster's transaction id counter. A dump
        # restored into another cluster whose counter is behind would sort new
        # events before old ones, and readers past the old ones would skip them.
        cur = await conn.execute(self._sql.max_tx)
        row = await cur.fetchone()
        if row is not None and row[0] is not None and int(row[0]) >= int(row[1]):
            raise StoreError(
                f"{self._target}: the log holds transaction id {row[0]}, but this cluster's next "
                f"transaction id is {row[1]}: the data was copied from another cluster. New events "
                "would sort before old ones; advance the transaction id counter first "
                "(see docs/postgres.md, 'Backups and restores')"
            )

    # -- running SQL -----------------------------------------------------------------

    def _error(self, what: str, exc: psycopg.Error) -> StoreError:
        """The eventvault error for a psycopg error on a live connection."""
        reason = _reason(exc)
        if isinstance(exc, psycopg.errors.DiskFull):
            return StorageFull(
                f"{what}: {self._target}'s disk is full ({reason}); nothing was written, "
                "retry once space is freed"
            )
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return StoreUnavailable(
                f"{what}: PostgreSQL cancelled the statement ({reason}); nothing was written, retry later"
            )
        if isinstance(exc, _ROLLED_BACK):
            return StoreUnavailable(
                f"{what}: PostgreSQL rolled the transaction back ({reason}); nothing was written, retry"
            )
        if isinstance(exc, psycopg.OperationalError):
            return StoreUnavailable(f"{what}: {self._target} is unavailable: {reason}")
        state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        return StoreError(f"{what}: {self._target} failed{state}: {reason}")

    async def _run(self, what: str, op: Callable[[Conn], Awaitable[T]], *, writes: bool = False) -> T:
        """Run ``op`` on a pooled connection, mapping errors at this edge.

        A connection found dead (the server restarted, the backend was terminated)
        is dropped, the pool's idle connections are checked, and ``op`` runs once
        more on a fresh one. That is safe for appends too: a retried append either
        finds its event ids already stored (and returns the first result) or
        appends them. If the retry cannot run either, the error says whether the
        outcome of a write is unknown.
        """
        if self._pool is None:
            await self.open()
        pool = self._pool
        if pool is None:  # pragma: no cover - open() sets it or raises
            raise StoreClosed(f"this {self.scheme} store is closed")
        retrying = False
        while True:
            conn = await self._connection_for(what, pool, writes=writes, retrying=retrying)
            try:
                result = await op(conn)
            except psycopg.Error as exc:
                self._raise_unless_lost_once(what, conn, exc, writes=writes, retrying=retrying)
                self._unreachable = True  # until a call succeeds: others wait briefly meanwhile
                log.warning("%s: connection to %s lost (%s); retrying once", what, self._target, _reason(exc))
            else:
                self._unreachable = False
                return result
            finally:
                await self._release(pool, conn)
            retrying = True
            await pool.check()

    async def _connection_for(
        self, what: str, pool: AsyncConnectionPool[Conn], *, writes: bool, retrying: bool
    ) -> Conn:
        # While the server is known to be away, or right after a connection
        # died, waiting the whole pool_timeout for a connection only delays
        # the answer: wait briefly, then say it is unavailable.
        timeout = self._outage_timeout if (self._unreachable or retrying) else None
        try:
            return await self._acquire(pool, timeout)
        except PoolClosed:
            raise StoreClosed(f"this {self.scheme} store is closed") from None
        except PoolTimeout as exc:
            self._unreachable = True
            raise self._unavailable(what, exc, writes=writes, unknown=writes and retrying) from exc

    def _raise_unless_lost_once(
        self, what: str, conn: Conn, exc: psycopg.Error, *, writes: bool, retrying: bool
    ) -> None:
        """Raise the error ``exc`` maps to, unless the connection died and a first retry is due."""
        if not _lost(conn):
            if writes and retrying:  # the first attempt's outcome is still unknown
                raise self._unavailable(what, exc, writes=True, unknown=True) from exc
            raise self._error(what, exc) from exc
        if retrying:
            self._unreachable = True
            raise self._unavailable(what, exc, writes=writes, unknown=writes) from exc

    async def _acquire(self, pool: AsyncConnectionPool[Conn], timeout: float | None = None) -> Conn:
        """A connection for one call: the spare one if it is free, else one from the pool.

        Each call gets a connection of its own, as from the pool, and gives it
        back with :meth:`_release`.
        """
        self._users += 1
        conn = self._spare
        if conn is not None:
            self._spare = None
            return conn
        try:
            if timeout is not None:
                return await pool.getconn(timeout)
            try:
                return await pool.getconn(self._outage_timeout)
            except PoolTimeout:
                # All taken for a while: wait out pool_timeout in slices, and give up
                # early if meanwhile another call found the server gone.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self._options.pool_timeout - self._outage_timeout
                while not self._unreachable and (left := deadline - loop.time()) > 0:
                    with contextlib.suppress(PoolTimeout):
                        return await pool.getconn(min(left, self._outage_timeout))
                raise
        except BaseException:
            self._users -= 1
            raise

    async def _release(self, pool: AsyncConnectionPool[Conn], conn: Conn) -> None:
        """Give back a connection from :meth:`_acquire`.

        When no other call holds or waits for a connection, this one is kept
        aside as the spare, for the next call to take without going through the
        pool (a single caller, one append after another, otherwise pays the
        pool's get and put, with their locks and bookkeeping, on every call).
        Anything else goes back to the pool: a connection that is not idle and
        healthy, one kept aside for ``_SPARE_SECONDS`` already (so that the pool
        still sees each connection now and then, to retire it at its
        ``max_lifetime``), and any connection while another call waits for one,
        which the pool hands on.
        """
        self._users -= 1
        if (
            self._users == 0
            and self._spare is None
            and not self._closed
            and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        ):
            now = asyncio.get_running_loop().time()
            if conn is not self._spare_conn:
                self._spare_conn, self._spare_until = conn, now + _SPARE_SECONDS
            if now < self._spare_until:
                self._spare = conn
                return
            self._spare_conn = None
        await pool.putconn(conn)

    def _unavailable(self, what: str, exc: BaseException, *, writes: bool, unknown: bool) -> StoreUnavailable:
        if isinstance(exc, PoolTimeout):
            cause = f"no connection to {self._target} within {self._options.pool_timeout:g}s"
        else:
            cause = f"the connection to {self._target} was lost ({_reason(exc)})"
        if unknown:
            return StoreUnavailable(
                f"{what}: {cause}. The outcome is unknown: it may or may not have been committed. "
                "Retrying with the same event ids is safe: if it landed, the retry returns its "
                "result and writes nothing"
            )
        return StoreUnavailable(f"{what}: {cause}; {'nothing was written, ' if writes else ''}retry later")

    # -- writing -----------------------------------------------------------------------

    async def _append(
        self, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        """Append alone, or, while ``append_concurrency`` appends are in flight, with others.

        An append that finds that many in flight waits; when one of them
        finishes, every append then waiting goes in one transaction (see
        :meth:`_append_group`). An append refused there, or one whose group
        failed, runs alone after all, which reports what went wrong.
        """
        query = self._append_query(expected, events)
        values = _append_values(stream_id, events, expected)
        if self._appending >= self._options.append_concurrency and not self._closed:
            waiting = _Waiting(
                stream_id, self._sql.prepared[query], values, asyncio.get_running_loop().create_future()
            )
            self._waiting.append(waiting)
            done = await waiting.done
            if done is not None:
                return done
        self._appending += 1
        try:
            result = await self._run(
                f"append to {stream_id!r}",
                lambda conn: self._append_rounds(conn, stream_id, events, expected, query, values, own=True),
                writes=True,
            )
        finally:
            self._appending -= 1
            if self._waiting:
                self._start_groups()
        self._hint_appended()
        return result

    def _start_groups(self) -> None:
        """Send the waiting appends, in groups of up to ``_GROUP_MAX``, while fewer than the limit run."""
        while self._waiting and self._appending < self._options.append_concurrency:
            group = [w for w in self._waiting[:_GROUP_MAX] if not w.done.done()]
            del self._waiting[:_GROUP_MAX]
            if group:
                self._appending += 1
                task = asyncio.get_running_loop().create_task(self._append_group(group))
                self._groups.add(task)
                task.add_done_callback(self._groups.discard)

    async def _append_group(self, group: list[_Waiting]) -> None:
        """Run a group of appends as one transaction: one round trip, one commit.

        The appends' statements go in one pipeline ended by a single sync,
        which PostgreSQL runs as one transaction; they lock their streams' rows
        in the order of the stream ids, as every group does, so that two groups
        never wait for each other in a cycle. A refused append (its expected
        version does not hold) inserts nothing and the others commit; any error
        rolls the whole transaction back, and every append of the group then
        runs alone (an append of the group whose outcome a lost connection left
        unknown is safe to run again: the retry finds its event ids stored).
        """
        results: list[AppendResult | None] = [None] * len(group)
        try:
            pool = self._pool
            if pool is not None and not self._closed:
                conn = await self._acquire(pool)
                try:
                    results = await self._pipeline(conn, group)
                finally:
                    await self._release(pool, conn)
        except Exception as exc:  # noqa: BLE001 - each append then runs alone and reports it
            log.debug("a group of %d appends failed (%s); each runs alone", len(group), _reason(exc))
        finally:
            self._appending -= 1
            if any(results):
                self._hint_appended()
            for waiting, result in zip(group, results, strict=True):
                if not waiting.done.done():
                    waiting.done.set_result(result)
            if self._waiting:
                self._start_groups()

    async def _pipeline(self, conn: Conn, group: list[_Waiting]) -> list[AppendResult | None]:
        """Each append's result in one transaction (None: refused); all None if it failed."""
        async with conn.lock:
            state = self._conn_state(conn)
            for statement in {w.statement for w in group}:
                await self._prepare(conn, state, statement)
            order = sorted(range(len(group)), key=lambda i: group[i].stream_id)
            pgconn = conn.pgconn
            pgconn.enter_pipeline_mode()
            try:
                for i in order:
                    statement, values = group[i].statement, group[i].values
                    pgconn.send_query_prepared(
                        statement.name,
                        _encoded(values, state.encoding),
                        param_formats=statement.formats,
                        result_format=pq.Format.BINARY,
                    )
                pgconn.pipeline_sync()
                answers = await _collect_pipeline(pgconn, len(group))
                pgconn.exit_pipeline_mode()
            except BaseException:
                # Mid-pipeline the connection cannot be handed back as it is.
                pgconn.finish()
                raise
        results: list[AppendResult | None] = [None] * len(group)
        for i, answer in zip(order, answers, strict=True):
            res = _one_result(answer, pq.ExecStatus.TUPLES_OK, state.encoding)
            results[i] = _append_result(group[i].stream_id, res)
        return results

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
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            await self.declare_writer(conn)
        query = self._append_query(expected, events)
        values = _append_values(stream_id, events, expected)
        return await self._append_rounds(conn, stream_id, events, expected, query, values, own=False)

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
        cur = await conn.execute(self._sql.declare_writer)
        row = await cur.fetchone()
        if row is None or not row[0]:
            raise StoreError(
                f"{self._target}: this transaction wrote before it was declared an event writer, so "
                "readers may already be past its transaction id; call declare_writer(conn) first in "
                "the transaction, before anything in it writes (docs/postgres.md, 'Appending in your "
                "own transaction')"
            )

    def _append_query(self, expected: ExpectedVersion, events: list[PreparedEvent]) -> bytes:
        if expected is NO_STREAM or expected == 0:
            kind = "new"
        elif expected is ANY:
            kind = "any"
        elif expected is STREAM_EXISTS:
            kind = "exists"
        else:
            kind = "exact"
        return self._sql.appends[kind, len(events) == 1]

    async def _append_rounds(  # noqa: PLR0913, PLR0917 - the append, its statement, whose connection
        self,
        conn: Conn,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        query: bytes,
        values: _AppendValues,
        *,
        own: bool,
    ) -> AppendResult:
        """Run the append statement; when it is refused, report why or run it again."""
        for _round in range(_MAX_CONFLICT_ROUNDS):
            try:
                if own:
                    done = await self._append_prepared(conn, stream_id, query, values)
                else:
                    done = await self._append_statement(conn, stream_id, query, values)
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
            f"is {self.schema}.streams out of step with {self.schema}.events?"
        )

    @staticmethod
    async def _append_statement(
        conn: Conn, stream_id: str, query: bytes, values: _AppendValues
    ) -> AppendResult | None:
        """The append through psycopg's cursor, on any connection (None: it was refused)."""
        in_transaction = conn.info.transaction_status != pq.TransactionStatus.IDLE
        async with conn.transaction() if in_transaction else contextlib.nullcontext():
            cur = await conn.execute(query, dict(zip(_APPEND_PARAMS, values, strict=True)), binary=True)
            rows = await cur.fetchall()
        if not rows:
            return None
        positions = tuple(int(r[0]) for r in rows)
        return AppendResult(
            stream_id, int(rows[-1][2]), positions, Checkpoint(int(rows[-1][1]), positions[-1])
        )

    async def _append_prepared(
        self, conn: Conn, stream_id: str, query: bytes, values: _AppendValues
    ) -> AppendResult | None:
        """The append as the store's own prepared statement (None: it was refused)."""
        return _append_result(
            stream_id, await self._execute_prepared(conn, self._sql.prepared[query], values)
        )

    async def _execute_prepared(
        self, conn: Conn, statement: _Prepared, values: Sequence[str | int | bytes | None]
    ) -> pq.abc.PGresult:
        """Run one of the store's statements, prepared, on one of its pooled connections.

        The append (and the notification) run through libpq directly:
        psycopg's cursor (query conversion, adapters, its prepared statement
        cache, row loading) and its wait loop cost more client CPU than the
        server takes to run an append (measured: about 250 us against 150 us
        per one-event append). Only the store's own autocommit connections run
        statements this way, where the store knows which ones it prepared.
        Errors are psycopg's, as its cursor raises them.
        """
        async with conn.lock:
            state = self._conn_state(conn)
            await self._prepare(conn, state, statement)
            conn.pgconn.send_query_prepared(
                statement.name,
                _encoded(values, state.encoding),
                param_formats=statement.formats,
                result_format=pq.Format.BINARY,
            )
            return _one_result(await _results(conn), statement.status, state.encoding)

    def _conn_state(self, conn: Conn) -> _ConnState:
        state = self._conn_states.get(conn)
        if state is None:
            state = self._conn_states[conn] = _ConnState(conn.info.encoding)
        return state

    @staticmethod
    async def _prepare(conn: Conn, state: _ConnState, statement: _Prepared) -> None:
        """Prepare ``statement`` on ``conn`` (whose lock the caller holds) unless it is already."""
        if statement.name not in state.prepared:
            conn.pgconn.send_prepare(statement.name, statement.text, param_types=statement.types)
            # Already there: an earlier call prepared it but was interrupted before the answer.
            with contextlib.suppress(psycopg.errors.DuplicatePreparedStatement):
                _one_result(await _results(conn), pq.ExecStatus.COMMAND_OK, state.encoding)
            state.prepared.add(statement.name)

    async def _resolve_conflict(
        self, conn: Conn, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult | None:
        """After a refused append: a retry that already landed, or the specific error."""
        cur = await conn.execute(self._sql.lookup_ids, [[e.event_id for e in events]], binary=True)
        found = {r[0]: Found(r[1], int(r[2]), int(r[3]), int(r[4])) for r in await cur.fetchall()}
        done = idempotent_result(stream_id, events, found)
        if done is not None:
            return done
        cur = await conn.execute(self._sql.stream_version, [stream_id])
        row = await cur.fetchone()
        check_version_matches(stream_id, expected, int(row[0]) if row else 0)
        return None

    def _hint_appended(self) -> None:
        """Tell waiters the log may have moved: this store's at once, others by NOTIFY (coalesced)."""
        if self._closed:
            return
        self._on_notify()
        if not self._options.notify:
            return
        self._notify_pending = True
        if self._notify_task is None or self._notify_task.done():
            self._notify_task = asyncio.get_running_loop().create_task(self._send_notifies())

    async def _send_notifies(self) -> None:
        pool = self._pool
        while self._notify_pending and pool is not None and not self._closed:
            # Appends that commit while this notification is in flight are covered
            # by the next one: one round trip at a time, however many appends.
            self._notify_pending = False
            try:
                conn = await self._acquire(pool)
                try:
                    await self._execute_prepared(conn, self._sql.prepared[self._sql.notify], [self.channel])
                finally:
                    await self._release(pool, conn)
            except psycopg.Error as exc:
                # Only a hint: readers poll as well.
                log.debug("notify on %s failed: %s", self.channel, _reason(exc))
                return
            # Listeners wake notify_debounce after a notification anyway, so sending
            # them closer together buys nothing, and each costs a round trip (with
            # one writer, as much client CPU as the append itself, measured). The
            # next one waits that long and covers every append made meanwhile.
            if self._options.notify_debounce > 0:
                await asyncio.sleep(self._options.notify_debounce)

    # -- reading -----------------------------------------------------------------------

    def _record(self, row: tuple[Any, ...]) -> RecordedEvent:
        return RecordedEvent(self.codec, *row)

    async def _read_stream(  # noqa: PLR0913, PLR0917 - the base class's signature
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]:
        statement = self._sql.read_stream[backwards, as_of_us is not None]
        values = (stream_id, from_version, _NO_LIMIT if to_version is None else to_version, as_of_us, limit)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            return await self._rows(conn, statement, values)

        rows = await self._run(f"read_stream({stream_id!r})", op)
        return [self._record(r) for r in rows]

    async def _rows(
        self, conn: Conn, statement: _Prepared, values: Sequence[str | int | bytes | None]
    ) -> list[tuple[Any, ...]]:
        """The rows of one of the store's prepared queries, loaded as psycopg's cursor would."""
        res = await self._execute_prepared(conn, statement, values)
        state = self._conn_state(conn)
        rows = state.rows
        if rows is None:
            rows = state.rows = Transformer(conn)
        rows.set_pgresult(res)
        try:
            return rows.load_rows(0, res.ntuples, tuple)
        finally:
            rows.set_pgresult(None)

    async def _stream_version(self, stream_id: str) -> int:
        async def op(conn: Conn) -> int:
            cur = await conn.execute(self._sql.stream_version, [stream_id])
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._run(f"stream_version({stream_id!r})", op)

    async def _read_all(self, after: Checkpoint, limit: int, event_types: tuple[str, ...] | None) -> LogPage:
        params: dict[str, Any] = {"tx": str(after.tx), "position": after.position, "limit": limit}
        if event_types is None:
            query = self._sql.read_all
        else:
            query = self._sql.read_all_filtered
            params["types"] = list(event_types)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params, binary=True)
            return await cur.fetchall()

        rows = await self._run("read_all", op)
        if event_types is None:
            events = [self._record(r) for r in rows]
            # A full page ends at its last event; a short one read everything
            # below the horizon, so its last event is the head of the readable log.
            return LogPage(events, events[-1].checkpoint if events else after)
        if not rows:  # nothing at all below the horizon yet
            return LogPage([], after)
        head = Checkpoint(int(rows[0][-2]), int(rows[0][-1]))
        events = [self._record(r[:-2]) for r in rows if r[0] is not None]
        if len(events) == limit:
            return LogPage(events, events[-1].checkpoint)
        # Short page: every event below the horizon was scanned, matching or not.
        # Continue after the last of them; never before `after` (a caller may
        # hold a checkpoint ahead of what is readable yet).
        return LogPage(events, max(head, after))

    async def _head(self) -> Checkpoint:
        async def op(conn: Conn) -> Checkpoint:
            cur = await conn.execute(self._sql.head, binary=True)
            row = await cur.fetchone()
            return START if row is None else Checkpoint(int(row[0]), int(row[1]))

        return await self._run("head", op)

    async def _checkpoint_at(self, position: int) -> Checkpoint | None:
        async def op(conn: Conn) -> Checkpoint | None:
            cur = await conn.execute(self._sql.checkpoint_at, [position], binary=True)
            row = await cur.fetchone()
            return None if row is None else Checkpoint(int(row[0]), position)

        return await self._run(f"checkpoint_at({position})", op)

    # -- snapshots -----------------------------------------------------------------------

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
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
        await self._run(f"save_snapshot({snapshot.stream_id!r})", op)

    async def _load_snapshot(self, stream_id: str, schema_version: int) -> Snapshot | None:
        async def op(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(self._sql.load_snapshot, [stream_id, schema_version], binary=True)
            return await cur.fetchone()

        row = await self._run(f"load_snapshot({stream_id!r})", op)
        if row is None:
            return None
        created: datetime = row[2]
        return Snapshot(stream_id, int(row[0]), schema_version, bytes(row[1]), created.astimezone(UTC))

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
        if self._pool is None:
            await self.open()
        if self._options.notify and (self._listener is None or self._listener.done()):
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    def _wake_all(self) -> None:
        self._wake_handle = None
        self._wakes += 1
        self._wake_waiters()

    def _on_notify(self) -> None:
        if self._wake_handle is not None:
            return  # a wake-up is already due: this notification joins it
        if self._options.notify_debounce == 0:
            self._wake_all()
        else:
            loop = asyncio.get_running_loop()
            self._wake_handle = loop.call_later(self._options.notify_debounce, self._wake_all)

    async def _listen(self) -> None:
        """Keep a LISTEN connection open for as long as the store is; reconnect when it drops."""
        backoff = 0.05
        while not self._closed:
            conn: Conn | None = None
            try:
                conn = await self._connect("listen")
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                self._listening = True
                backoff = 0.05
                self._wake_all()  # appends made while nobody listened were not announced
                async for _ in conn.notifies():
                    self._on_notify()
            except (psycopg.Error, StoreUnavailable) as exc:
                log.debug("listener on %s: %s; polling until it reconnects", self.channel, _reason(exc))
            finally:
                self._listening = False
                if conn is not None:
                    await conn.close()
            self._wake_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stopping.wait()
            backoff = min(backoff * 2, max(self.poll_interval, 0.05))

    # -- monitoring ------------------------------------------------------------------------

    async def read_horizon_lag(self) -> HorizonLag:
        """How many committed events readers cannot see yet, and the event writer holding them back."""

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(self._sql.horizon_lag)
            return await cur.fetchone()

        self._check_open()
        row = await self._run("read_horizon_lag", op)
        if row is None:  # pragma: no cover - the query always returns one row
            return HorizonLag(0, None, None, None, None)
        return HorizonLag(int(row[0]), row[1], row[2], row[3], row[4], row[5])

    def __repr__(self) -> str:
        return f"<PostgresEventStore {self._target}{' closed' if self._closed else ''}>"
