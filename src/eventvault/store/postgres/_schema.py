"""The schema: its tables and migrations, the read horizon, and every statement the store runs.

The statements are composed once per schema and kept as bytes with psycopg's
``%s`` / ``%(name)s`` placeholders; the store runs them through psycopg's cursor,
prepared on each connection (``prepare=True``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import args_row

from eventvault.domain import STREAM_DELETED
from eventvault.errors import StoreError
from eventvault.store import migrations
from eventvault.store.postgres._libpq import HotStatements, hot_statements

Conn = psycopg.AsyncConnection[Any]

# Versions above this are never used; it stands for "no upper bound" in SQL.
NO_LIMIT: Final = 2**62


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


# Whether no event was written by a transaction at or past the snapshot's xmin.
# "exists" (schema 3): a plpgsql statement with the xmin as a parameter, which
# after five calls runs as a generic plan; not knowing the value, the planner
# takes a third of the log to match and scans the table for the first row,
# i.e. the whole log whenever nothing is held back (100 ms at 1,000,000 events,
# on every read). "max" (schema 8): the newest tx_id, read from the end of the
# events_log_order index whatever the plan or the statistics.
_NOTHING_HELD: Final = {
    "exists": sql.SQL("NOT EXISTS (SELECT 1 FROM {s}.events WHERE tx_id >= pg_snapshot_xmin(snap))"),
    "max": sql.SQL("coalesce((SELECT max(tx_id) FROM {s}.events), '0'::xid8) < pg_snapshot_xmin(snap)"),
}


def _read_horizon_function(s: sql.Identifier, schema: str, *, probe: str = "exists") -> sql.Composed:
    # `probe` names the test for "nothing committed is held back" (_NOTHING_HELD):
    # schema 3 made the function with "exists", schema 8 with "max".
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
            IF {nothing_held} THEN
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
    ).format(
        s=s,
        holds=_holds_writers_lock(schema, sql.Identifier("a")),
        nothing_held=_NOTHING_HELD[probe].format(s=s),
    )


def _dcb_lock_function(s: sql.Identifier, schema: str) -> sql.Composed:
    # The writers' lock first (exclusive for a condition on every event, or on event
    # types: every event writer holds it shared), then the tag keys in the order
    # given (sorted by the caller), each exclusive if a condition checks it, shared
    # if the append only writes events carrying it. One order for every appender,
    # so no two wait for each other in a cycle.
    return sql.SQL(
        """
        CREATE OR REPLACE FUNCTION {s}.dcb_lock(whole_log boolean, keys int8[], exclusive boolean[])
        RETURNS void LANGUAGE plpgsql VOLATILE AS $fn$
        BEGIN
            IF whole_log THEN
                PERFORM pg_advisory_xact_lock({cls}, {key});
            ELSE
                PERFORM pg_advisory_xact_lock_shared({cls}, {key});
            END IF;
            FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
                IF exclusive[i] THEN
                    PERFORM pg_advisory_xact_lock(keys[i]);
                ELSE
                    PERFORM pg_advisory_xact_lock_shared(keys[i]);
                END IF;
            END LOOP;
        END
        $fn$"""
    ).format(s=s, cls=sql.Literal(_WRITERS_CLASS), key=sql.Literal(_writers_key(schema)))


def tag_key(schema: str, tag: str) -> int:
    """The advisory lock key of ``tag`` in ``schema`` (a bigint; the writers' lock is a pair of ints)."""
    digest = hashlib.blake2b(f"eventvault tag {schema} {tag}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Migration(NamedTuple):
    """One schema version: its number, a description and the statements that make it.

    The store's component (``store_component``) runs them in order through
    ``eventvault.store.migrations``; a new version is one more Migration appended
    to ``_migrations``, numbered next.
    """

    version: int
    description: str
    statements: list[sql.Composed]


def _migrations(s: sql.Identifier, schema: str) -> list[Migration]:
    """Every schema version, oldest first."""
    return [
        Migration(
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
        Migration(
            2,
            "index events by position, for checkpoint_at",
            [
                # Callers that kept only a position (an HTTP client's consistency
                # token) ask for its checkpoint: one index probe, not a scan.
                sql.SQL("CREATE UNIQUE INDEX events_position ON {s}.events (position)").format(s=s),
            ],
        ),
        Migration(
            3,
            "read_horizon(): readers wait only for transactions that write events",
            [_read_horizon_function(s, schema)],
        ),
        # -- stream-id prefixes (read_category, list_streams) -------------------
        Migration(
            4,
            "index stream ids for prefix ranges, for category reads",
            [
                # text_pattern_ops compares bytewise whatever the database's
                # collation, so "ids starting with p" is one range of this index.
                # On streams, not events: one entry per stream, written once.
                sql.SQL("CREATE INDEX streams_id_prefix ON {s}.streams (stream_id text_pattern_ops)").format(
                    s=s
                ),
            ],
        ),
        # -- tags (dynamic consistency boundaries) ------------------------------
        Migration(
            5,
            "tags: events.tags and the event_tags index, dcb_lock() for conditional appends",
            [
                # A constant default: existing rows need no rewrite.
                sql.SQL("ALTER TABLE {s}.events ADD COLUMN tags text[] NOT NULL DEFAULT '{{}}'").format(s=s),
                # One row per tag of an event, in log order per tag: "an event with
                # this tag after checkpoint C" is one range probe of the primary key
                # (docs/decisions/0028). Events without tags have no rows here.
                sql.SQL(
                    """
                    CREATE TABLE {s}.event_tags (
                        tag text NOT NULL,
                        tx_id xid8 NOT NULL,
                        position bigint NOT NULL,
                        PRIMARY KEY (tag, tx_id, position)
                    )"""
                ).format(s=s),
                _dcb_lock_function(s, schema),
            ],
        ),
        # -- deletes and retention (docs/decisions/0032) ------------------------
        Migration(
            6,
            "stream deletes and retention rules: columns of streams",
            [
                # On the row every append locks and bumps already, so the bump itself
                # refuses appends to a deleted stream at no extra cost. deleted_version
                # is the version of the stream's latest $StreamDeleted event (the
                # stream reads as "no stream" while version = deleted_version);
                # max_age_us in microseconds. Constant defaults: no rewrite.
                sql.SQL(
                    "ALTER TABLE {s}.streams ADD COLUMN deleted_version bigint NOT NULL DEFAULT 0, "
                    "ADD COLUMN tombstoned boolean NOT NULL DEFAULT false, "
                    "ADD COLUMN truncate_before bigint NOT NULL DEFAULT 0, "
                    "ADD COLUMN max_count bigint, ADD COLUMN max_age_us bigint"
                ).format(s=s),
                # A stream may get retention rules before its first event: its row is
                # then at version 0 (and reads, listings and categories, which join
                # the stream's events, find none).
                sql.SQL("ALTER TABLE {s}.streams DROP CONSTRAINT IF EXISTS streams_version_check").format(
                    s=s
                ),
            ],
        ),
        # -- keys of personal fields (crypto-shredding) ---------------------------
        Migration(
            7,
            "subject_keys: the keys of the subjects of personal fields, beside the log",
            [
                # Forgetting sets key_id and key to NULL; the row stays, so the subject
                # is known as forgotten. A new table: the log is not touched.
                sql.SQL(
                    """
                    CREATE TABLE {s}.subject_keys (
                        subject text PRIMARY KEY,
                        key_id text,
                        key bytea,
                        created_us bigint NOT NULL,
                        forgotten_us bigint
                    )"""
                ).format(s=s),
            ],
        ),
        Migration(
            8,
            "read_horizon(): find the newest event through the log-order index, not a scan",
            [_read_horizon_function(s, schema, probe="max")],
        ),
    ]


_EVENT_COLUMNS: Final = sql.SQL(
    "event_id, stream_id, stream_version, position, event_type, schema_version, "
    "occurred_us, recorded_us, data, metadata, tx_id, tags"
)


def _names(columns: sql.SQL) -> list[str]:
    """The names in a select list of plain, comma-separated columns."""
    return [c.strip() for c in columns.as_bytes(None).decode().split(",")]


EVENT_COLUMN_COUNT: Final = len(_names(_EVENT_COLUMNS))
"""How many columns ``_EVENT_COLUMNS`` selects: the fields of a row that becomes an event."""

# snapshot_and_stream's first columns: the row's kind (0: the stream's lifecycle and
# its snapshot, 1: an event), then the lifecycle and the snapshot, null in events' rows.
_SNAPSHOT_HEAD: Final = sql.SQL(
    "0, st.version, st.deleted_version, st.tombstoned, st.truncate_before, st.max_count, "
    "st.max_age_us, sn.stream_version, sn.state, sn.created_at"
)
SNAPSHOT_AND_STREAM_EVENT_AT: Final = len(_names(_SNAPSHOT_HEAD))
"""Where the event columns start in a row of ``snapshot_and_stream``."""


_SNAPSHOTS_WHERE: Final = sql.SQL(
    "(%(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)) "
    "AND (%(stream_id)s::text IS NULL OR stream_id = %(stream_id)s::text)"
)


def _horizon(s: sql.Identifier) -> sql.Composed:
    """The read horizon, once per statement (an uncorrelated subquery runs once)."""
    return sql.SQL("(SELECT {s}.read_horizon())").format(s=s)


@dataclass(frozen=True, slots=True)
class Statements:
    """The store's SQL, composed once per schema and kept as bytes (psycopg prepares them)."""

    appends: dict[tuple[str, bool], bytes]
    """The append statements, by the expected version's kind and whether it is of one event."""
    lookup_ids: bytes
    stream_version: bytes
    stream_state: bytes
    """(version, deleted_version, tombstoned) of a stream: why an append was refused."""
    lifecycle: bytes
    snapshot_and_stream: bytes
    """A stream's lifecycle and snapshot (first row, kind 0), then its events after the snapshot (kind 1)."""
    ruled_streams: bytes
    read_stream: dict[tuple[bool, bool], bytes]
    """Stream reads by (backwards, as_of)."""
    read_all: bytes
    read_all_filtered: bytes
    read_category: bytes
    list_streams: bytes
    get_event: bytes
    counts: bytes
    head: bytes
    checkpoint_at: bytes
    max_tx: bytes
    save_snapshot: bytes
    load_snapshot: bytes
    list_snapshots: bytes
    drop_snapshots: bytes
    notify: bytes
    horizon_lag: bytes
    declare_writer: bytes
    bumps: dict[str, sql.Composed]
    """The stream row's bump by the expected version's kind (it selects from a ``writer`` CTE), for
    statements composed per call: the conditional append (``_dcb``) builds its own around it."""
    hot: HotStatements
    """The appends, stream reads and notification again, as ``_libpq`` runs them."""


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


# A notification is a hint: its transaction need not wait for the WAL to
# reach the disk (NOTIFY takes a transaction id, so committing it would
# otherwise cost one more flush per append). The setting is local to
# this one-statement transaction and applies to its commit.
_NOTIFY: Final = b"SELECT set_config('synchronous_commit', 'off', true), pg_notify(%(channel)s, '')"


@cache
def statements(schema: str) -> Statements:
    s = sql.Identifier(schema)
    # The writers' lock comes first: every bump reads the one row of `writer`, so
    # the lock is held before the statement writes anything (and so before the
    # transaction has an id to leave in tx_id).
    writer = sql.SQL("writer AS MATERIALIZED (SELECT {lock})").format(lock=_take_writers_lock(schema))
    insert_stream = sql.SQL(
        "INSERT INTO {s}.streams AS st (stream_id, version) SELECT %(stream_id)s, %(n)s FROM writer"
    ).format(s=s)
    # With %(rules)s, what the stream's deletes and retention rules hide is left
    # out (StreamLifecycle.first_version and max_age, in SQL): one statement, one
    # round trip, as before there were rules. Two probes of the streams row, each
    # run once (uncorrelated). Recorded times rise along a stream (an append's is
    # taken under the stream's row lock), so max_age keeps a suffix of it.
    shown = sql.SQL(
        "AND stream_version >= coalesce((SELECT CASE WHEN NOT %(rules)s THEN 1 "
        "WHEN tombstoned OR (deleted_version > 0 AND version = deleted_version) THEN version + 1 "
        "ELSE GREATEST(1, truncate_before, deleted_version + 1, version - coalesce(max_count, version) + 1) "
        "END FROM {s}.streams WHERE stream_id = %(stream_id)s), 1) "
        "AND (NOT %(rules)s OR recorded_us >= coalesce((SELECT "
        "(extract(epoch FROM clock_timestamp()) * 1000000)::int8 - max_age_us "
        "FROM {s}.streams WHERE stream_id = %(stream_id)s), -4611686018427387904))"
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
                    "AND stream_version >= %(from)s AND stream_version <= {upper} {shown} "
                    "ORDER BY stream_version {direction} LIMIT %(limit)s"
                )
                .format(
                    cols=_EVENT_COLUMNS,
                    s=s,
                    upper=upper,
                    shown=shown,
                    direction=sql.SQL("DESC" if backwards else "ASC"),
                )
                .as_bytes(None)
            )
    page_where = sql.SQL(
        "(tx_id, position) > (%(tx)s::xid8, %(position)s::int8) AND tx_id < {horizon}"
    ).format(horizon=_horizon(s))
    # A deleted stream's row is at its deleted_version (a tombstoned one always
    # is: nothing follows its $StreamDeleted event): it takes NO_STREAM (and ANY)
    # appends unless tombstoned, which continue its versions, and refuses the rest.
    bumps = {
        "new": sql.SQL(
            "{} ON CONFLICT (stream_id) DO UPDATE SET version = st.version + excluded.version "
            "WHERE st.version = st.deleted_version AND NOT st.tombstoned"
        ).format(insert_stream),
        "any": sql.SQL(
            "{} ON CONFLICT (stream_id) DO UPDATE SET version = st.version + excluded.version "
            "WHERE NOT st.tombstoned"
        ).format(insert_stream),
        "exact": sql.SQL(
            "UPDATE {s}.streams SET version = version + %(n)s FROM writer "
            "WHERE stream_id = %(stream_id)s AND version = %(expected)s AND version <> deleted_version"
        ).format(s=s),
        "exists": sql.SQL(
            "UPDATE {s}.streams SET version = version + %(n)s FROM writer "
            "WHERE stream_id = %(stream_id)s AND version <> deleted_version"
        ).format(s=s),
    }
    appends = {
        (kind, single): _append_sql(s, writer, bump, single=single)
        for kind, bump in bumps.items()
        for single in (False, True)
    }
    return Statements(
        appends=appends,
        bumps=bumps,
        lookup_ids=sql.SQL(
            "SELECT event_id, stream_id, stream_version, position, tx_id::text::int8 FROM {s}.events "
            "WHERE event_id = ANY(%s::uuid[])"
        )
        .format(s=s)
        .as_bytes(None),
        stream_version=sql.SQL("SELECT version FROM {s}.streams WHERE stream_id = %s")
        .format(s=s)
        .as_bytes(None),
        stream_state=sql.SQL(
            "SELECT version, deleted_version, tombstoned FROM {s}.streams WHERE stream_id = %s"
        )
        .format(s=s)
        .as_bytes(None),
        lifecycle=sql.SQL(
            "SELECT version, deleted_version, tombstoned, truncate_before, max_count, max_age_us "
            "FROM {s}.streams WHERE stream_id = %s"
        )
        .format(s=s)
        .as_bytes(None),
        # One round trip for an aggregate's load: the first row holds the stream's
        # lifecycle columns and its snapshot at the schema version (at or below
        # "to"), either half null; the events after that snapshot follow it.
        snapshot_and_stream=sql.SQL(
            "SELECT {head}, {no_event} "
            "FROM (SELECT %(stream_id)s::text AS stream_id) q "
            "LEFT JOIN {s}.streams st ON st.stream_id = q.stream_id "
            "LEFT JOIN {s}.snapshots sn ON sn.stream_id = q.stream_id "
            "AND sn.schema_version = %(schema_version)s AND sn.stream_version <= %(to)s "
            "UNION ALL "
            "SELECT 1, {no_head}, {cols} FROM {s}.events "
            "WHERE stream_id = %(stream_id)s AND stream_version <= %(to)s AND stream_version > coalesce("
            "(SELECT stream_version FROM {s}.snapshots WHERE stream_id = %(stream_id)s "
            "AND schema_version = %(schema_version)s AND stream_version <= %(to)s), 0) "
            "ORDER BY 1, {version_column}"
        )
        .format(
            s=s,
            head=_SNAPSHOT_HEAD,
            no_head=sql.SQL(", ").join([sql.SQL("NULL")] * (SNAPSHOT_AND_STREAM_EVENT_AT - 1)),
            cols=_EVENT_COLUMNS,
            no_event=sql.SQL(", ").join([sql.SQL("NULL")] * EVENT_COLUMN_COUNT),
            # ORDER BY the kind, then the events' stream_version (1-based places)
            version_column=sql.Literal(
                SNAPSHOT_AND_STREAM_EVENT_AT + _names(_EVENT_COLUMNS).index("stream_version") + 1
            ),
        )
        .as_bytes(None),
        ruled_streams=sql.SQL(
            "SELECT stream_id FROM {s}.streams WHERE deleted_version > 0 OR truncate_before > 1 "
            'OR max_count IS NOT NULL OR max_age_us IS NOT NULL ORDER BY stream_id COLLATE "C"'
        )
        .format(s=s)
        .as_bytes(None),
        read_stream=read_stream,
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
        # A category: the streams whose ids fall in the prefix's range of
        # streams_id_prefix, then their events through (stream_id, stream_version),
        # below the horizon and in log order; rows as in read_all_filtered.
        read_category=sql.SQL(
            """
            WITH horizon AS MATERIALIZED (SELECT {s}.read_horizon() AS xmin),
            page AS (
                SELECT e.* FROM {s}.streams AS st CROSS JOIN LATERAL (
                    SELECT {cols} FROM {s}.events
                    WHERE stream_id = st.stream_id
                      AND (tx_id, position) > (%(tx)s::xid8, %(position)s::int8)
                      AND tx_id < (SELECT xmin FROM horizon)
                    ORDER BY tx_id, position LIMIT %(limit)s) AS e
                WHERE st.stream_id ~>=~ %(lower)s
                  AND (%(upper)s::text IS NULL OR st.stream_id ~<~ %(upper)s::text)
                ORDER BY e.tx_id, e.position LIMIT %(limit)s),
            head AS (
                SELECT tx_id, position FROM {s}.events WHERE tx_id < (SELECT xmin FROM horizon)
                ORDER BY tx_id DESC, position DESC LIMIT 1)
            SELECT page.*, head.tx_id, head.position
            FROM head LEFT JOIN page ON true
            ORDER BY page.tx_id, page.position"""
        )
        .format(cols=_EVENT_COLUMNS, s=s)
        .as_bytes(None),
        # Streams by id with their last readable event (one index probe each).
        # A deleted stream is skipped on its row (version = deleted_version: no
        # event read), and so is one whose last readable event is still its
        # delete (written again, the new events not below the horizon yet).
        list_streams=sql.SQL(
            """
            SELECT st.stream_id, last.stream_version, last.position, last.recorded_us
            FROM {s}.streams AS st
            CROSS JOIN LATERAL (
                SELECT stream_version, position, recorded_us, event_type FROM {s}.events AS e
                WHERE e.stream_id = st.stream_id AND e.tx_id < {horizon}
                ORDER BY stream_version DESC LIMIT 1) AS last
            WHERE st.stream_id ~>=~ %(lower)s
              AND (%(upper)s::text IS NULL OR st.stream_id ~<~ %(upper)s::text)
              AND (%(after)s::text IS NULL OR st.stream_id ~>~ %(after)s::text)
              AND st.version > st.deleted_version AND last.event_type <> {deleted}
            ORDER BY st.stream_id USING ~<~ LIMIT %(limit)s"""
        )
        .format(s=s, horizon=_horizon(s), deleted=sql.Literal(STREAM_DELETED))
        .as_bytes(None),
        get_event=sql.SQL("SELECT {cols} FROM {s}.events WHERE event_id = %s AND tx_id < {horizon}")
        .format(cols=_EVENT_COLUMNS, s=s, horizon=_horizon(s))
        .as_bytes(None),
        # The readable events; the streams list_streams lists (the same test).
        counts=sql.SQL(
            """
            WITH horizon AS MATERIALIZED (SELECT {s}.read_horizon() AS xmin)
            SELECT (SELECT count(*) FROM {s}.events WHERE tx_id < (SELECT xmin FROM horizon)),
                (SELECT count(*) FROM {s}.streams AS st CROSS JOIN LATERAL (
                    SELECT event_type FROM {s}.events AS e
                    WHERE e.stream_id = st.stream_id AND e.tx_id < (SELECT xmin FROM horizon)
                    ORDER BY stream_version DESC LIMIT 1) AS last
                 WHERE st.version > st.deleted_version AND last.event_type <> {deleted})"""
        )
        .format(s=s, deleted=sql.Literal(STREAM_DELETED))
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
        max_tx=sql.SQL(
            "SELECT (SELECT max(tx_id) FROM {s}.events)::text::int8, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::int8"
        )
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
        # Operators' listings and drops: the snapshots table is one row per
        # aggregate (and schema version), read whole; ids in code point order.
        list_snapshots=sql.SQL(
            "SELECT stream_id, schema_version, stream_version, octet_length(state), created_at "
            'FROM {s}.snapshots WHERE {where} ORDER BY stream_id COLLATE "C", schema_version '
            "LIMIT %(limit)s"
        )
        .format(s=s, where=_SNAPSHOTS_WHERE)
        .as_bytes(None),
        drop_snapshots=sql.SQL("DELETE FROM {s}.snapshots WHERE {where}")
        .format(s=s, where=_SNAPSHOTS_WHERE)
        .as_bytes(None),
        notify=_NOTIFY,
        hot=hot_statements(appends, read_stream, _NOTIFY),
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


class _XidCounter(NamedTuple):
    """The log's newest transaction id, and the cluster's next one."""

    newest_in_log: int | None
    next_xid: int


SCHEMA_COMPONENT: Final = "store"
"""The store's row in the schema's ``eventvault_schema``."""

# Code from before decision 0034 kept the store's versions in schema_migrations,
# and read only that table. Adopting such a schema leaves its rows (the history)
# and adds this one, above every version that code knows: it then refuses the
# schema with its SchemaVersionError, instead of finding it empty and failing
# to create tables that are there.
_MOVED_VERSION: Final = 2**31 - 1


@cache
def store_component(schema: str) -> migrations.Component:
    """The event store's migrations for ``schema``, as the one migration mechanism runs them."""
    s = sql.Identifier(schema)
    return migrations.Component(
        SCHEMA_COMPONENT,
        tuple(
            migrations.Migration(m.version, m.description, tuple(st.as_string(None) for st in m.statements))
            for m in _migrations(s, schema)
        ),
        what="event store schema",
        adopt=_adopt_schema_migrations,
    )


def _adopt_schema_migrations(target: migrations.Target) -> int:
    """The version a schema made before 0034 records in schema_migrations (0: none)."""
    if not target.exists("schema_migrations"):
        return 0
    table = target.table("schema_migrations")
    (version,) = target.execute(f"SELECT coalesce(max(version), 0) FROM {table}").fetchone()  # noqa: S608
    target.execute(
        f"INSERT INTO {table} (version, description) VALUES (?, ?) ON CONFLICT (version) DO NOTHING",  # noqa: S608
        (_MOVED_VERSION, "versions are kept in eventvault_schema from here on (docs/decisions/0034)"),
    )
    return int(version)


SCHEMA_VERSION: Final = store_component("eventvault").version
"""The schema version this code creates and understands."""


def migrate(conn: psycopg.Connection[Any], schema: str, target: str) -> int:
    """Bring ``schema`` to :data:`SCHEMA_VERSION` on ``conn`` (autocommit); the version it is at."""
    # Two processes may start at once: the migration lock makes the second
    # wait, then find the schema current and do nothing.
    where = migrations.Target(conn, "postgresql", target, schema=schema)
    version = migrations.migrate(where, [store_component(schema)])[SCHEMA_COMPONENT]
    _check_xid_counter(conn, schema, target)
    return version


def _check_xid_counter(conn: psycopg.Connection[Any], schema: str, target: str) -> None:
    # The log's order is tied to this cluster's transaction id counter. A dump
    # restored into another cluster whose counter is behind would sort new
    # events before old ones, and readers past the old ones would skip them.
    with conn.cursor(row_factory=args_row(_XidCounter)) as cur:
        cur.execute(statements(schema).max_tx)
        row = cur.fetchone()
    if row is not None and row.newest_in_log is not None and row.newest_in_log >= row.next_xid:
        raise StoreError(
            f"{target}: the log holds transaction id {row.newest_in_log}, but this cluster's next "
            f"transaction id is {row.next_xid}: the data was copied from another cluster. New events "
            "would sort before old ones; advance the transaction id counter first "
            "(see docs/postgres.md, 'Backups and restores')"
        )
