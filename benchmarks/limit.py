"""The limit: the raw driver (sqlite3, psycopg) doing the same work on the same schema.

It writes the very rows eventvault writes, into tables made by eventvault's own
migrations, at the same durability: on SQLite WAL with ``synchronous=FULL``
and ``BEGIN IMMEDIATE``; on PostgreSQL an autocommit statement per append, as
eventvault does; W6's read model at the durability of eventvault's read models
(``synchronous=NORMAL``, ``synchronous_commit=off``). An append checks the
expected version the way eventvault does (SQLite: ``max(stream_version)`` in
the transaction; PostgreSQL: the ``streams`` row bumped in the same statement
as the insert), because that check is what makes it an event store append. Reads run eventvault's SELECTs (the
same columns, the same order, on PostgreSQL the same visibility horizon) and
decode the JSON with msgspec straight into the event classes: no envelope
objects, no registry, no checks. Nothing here is a product; it only sets the bar.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
from psycopg import sql

from benchmarks.backends import Backend, Place, PostgresBackend, SQLiteBackend
from benchmarks.ev import summary_schema
from benchmarks.model import AccountArgs, DepositArgs, Deposited, Opened
from benchmarks.plan import Plan, Sizes, Stopwatch, Timing
from eventvault._ids import uuid7

__all__ = ["Limit"]

_OPENED: Final = "BenchOpened"
_DEPOSITED: Final = "BenchDeposited"
_EMPTY_META: Final = b"{}"

_encoder = msgspec.json.Encoder(decimal_format="string")
_decoders: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    _OPENED: msgspec.json.Decoder(Opened),
    _DEPOSITED: msgspec.json.Decoder(Deposited),
}


def _opened(args: AccountArgs) -> bytes:
    return _encoder.encode(Opened(args.owner_name, args.currency, args.branch, args.note))


def _deposited(args: DepositArgs) -> bytes:
    return _encoder.encode(Deposited(args.amount, args.description, args.reference, args.channel))


def _now_us() -> int:
    return time.time_ns() // 1000


class Conflict(Exception):
    """The stream was not at the expected version."""


# -- SQLite ------------------------------------------------------------------------------------

_SQLITE_VERSION: Final = "SELECT max(stream_version) FROM events WHERE stream_id = ?"
_SQLITE_INSERT: Final = (
    "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, "
    "occurred_at, recorded_at, data, metadata) VALUES (?, ?, ?, ?, 1, ?, ?, ?, NULL)"
)
_SQLITE_STREAM: Final = (
    "SELECT event_id, stream_version, position, event_type, schema_version, occurred_at, recorded_at, "
    "data, metadata FROM events WHERE stream_id = ? ORDER BY stream_version"
)
_SQLITE_LOG: Final = (
    "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, occurred_at, "
    "recorded_at, data, metadata FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
_SQLITE_SNAPSHOT: Final = (
    "SELECT stream_version, state FROM snapshots WHERE stream_id = ? AND schema_version = ?"
)


class _SQLite:
    def __init__(self, backend: SQLiteBackend) -> None:
        self.backend = backend

    def append(self, cur: Any, stream_id: str, expected: int, events: Sequence[tuple[str, bytes]]) -> None:
        cur.execute("BEGIN IMMEDIATE")
        version = cur.execute(_SQLITE_VERSION, (stream_id,)).fetchone()[0] or 0
        if version != expected:
            cur.execute("ROLLBACK")
            raise Conflict(stream_id)
        try:
            now = _now_us()
            rows = [
                (uuid7().bytes, stream_id, version + i, kind, now, now, data)
                for i, (kind, data) in enumerate(events, start=1)
            ]
            if len(rows) == 1:
                cur.execute(_SQLITE_INSERT, rows[0])
            else:
                cur.executemany(_SQLITE_INSERT, rows)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def read_stream(self, cur: Any, stream_id: str) -> list[tuple[str, bytes]]:
        return [(r[3], r[7]) for r in cur.execute(_SQLITE_STREAM, (stream_id,))]

    def pages(self, cur: Any, page: int) -> Any:
        after = 0
        while True:
            rows = cur.execute(_SQLITE_LOG, (after, page)).fetchall()
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def snapshot(self, cur: Any, stream_id: str) -> tuple[int, bytes] | None:
        row = cur.execute(_SQLITE_SNAPSHOT, (stream_id, 1)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))


# -- PostgreSQL --------------------------------------------------------------------------------


class _Postgres:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    @staticmethod
    def _append_sql(schema: str, *, new: bool, single: bool) -> bytes:
        """The append as one statement: bump the stream row under its condition, insert the events.

        One event takes plain parameters; several take one array per column,
        passed as array literals in text, which psycopg sends as they are (adapting
        Python lists element by element costs ~10x more than the whole statement
        takes the server to run).
        """
        s = sql.Identifier(schema)
        bump = (
            sql.SQL(
                "INSERT INTO {s}.streams (stream_id, version) VALUES (%(stream)s, %(n)s) "
                "ON CONFLICT (stream_id) DO NOTHING"
            )
            if new
            else sql.SQL(
                "UPDATE {s}.streams SET version = version + %(n)s "
                "WHERE stream_id = %(stream)s AND version = %(expected)s"
            )
        ).format(s=s)
        rows = (
            sql.SQL(
                "SELECT %(ids)s::uuid, %(stream)s, bump.version, %(kinds)s, 1, %(now)s, %(now)s, "
                "%(data)s::bytea, %(meta)s::bytea FROM bump"
            )
            if single
            else sql.SQL(
                "SELECT u.id, %(stream)s, bump.version - %(n)s + u.ord, u.kind, 1, %(now)s, %(now)s, "
                "u.data, %(meta)s::bytea FROM bump, "
                "unnest(%(ids)s::uuid[], %(kinds)s::text[], %(data)s::bytea[]) "
                "WITH ORDINALITY AS u(id, kind, data, ord)"
            )
        )
        return (
            sql.SQL(
                "WITH bump AS ({bump} RETURNING version) "
                "INSERT INTO {s}.events (event_id, stream_id, stream_version, event_type, schema_version, "
                "occurred_us, recorded_us, data, metadata) {rows}"
            )
            .format(bump=bump, s=s, rows=rows)
            .as_bytes(None)
        )

    def appender(self, schema: str) -> Callable[[Any, str, int, Sequence[tuple[str, bytes]]], None]:
        statements = {
            (new, single): self._append_sql(schema, new=new, single=single)
            for new in (False, True)
            for single in (False, True)
        }

        def append(cur: Any, stream_id: str, expected: int, events: Sequence[tuple[str, bytes]]) -> None:
            n = len(events)
            params: dict[str, Any] = {"stream": stream_id, "n": n, "expected": expected, "now": _now_us()}
            if n == 1:
                params |= {
                    "ids": uuid7(),
                    "kinds": events[0][0],
                    "data": events[0][1],
                    "meta": _EMPTY_META,
                }
            else:
                params |= {
                    "ids": "{" + ",".join(str(uuid7()) for _ in events) + "}",
                    "kinds": "{" + ",".join(f'"{k}"' for k, _ in events) + "}",
                    "data": "{" + ",".join(f'"\\\\x{d.hex()}"' for _, d in events) + "}",
                    "meta": _EMPTY_META,
                }
            cur.execute(statements[expected == 0, n == 1], params, prepare=True)
            if cur.rowcount != n:
                raise Conflict(stream_id)

        return append

    @staticmethod
    def stream_sql(schema: str) -> bytes:
        return (
            sql.SQL(
                "SELECT event_id, stream_id, stream_version, position, event_type, schema_version, "
                "occurred_us, recorded_us, data, metadata, tx_id::text::int8 FROM {s}.events "
                "WHERE stream_id = %s ORDER BY stream_version"
            )
            .format(s=sql.Identifier(schema))
            .as_bytes(None)
        )

    @staticmethod
    def log_sql(schema: str) -> bytes:
        return (
            sql.SQL(
                "SELECT event_id, stream_id, stream_version, position, event_type, schema_version, "
                "occurred_us, recorded_us, data, metadata, tx_id::text::int8 FROM {s}.events "
                "WHERE (tx_id, position) > (%s::text::xid8, %s::int8) "
                "AND tx_id < (SELECT pg_snapshot_xmin(pg_current_snapshot())) "
                "ORDER BY tx_id, position LIMIT %s"
            )
            .format(s=sql.Identifier(schema))
            .as_bytes(None)
        )

    def pages(self, cur: Any, schema: str, page: int) -> Any:
        query = self.log_sql(schema)
        tx, position = 0, 0
        while True:
            rows = cur.execute(query, (str(tx), position, page), prepare=True).fetchall()
            if not rows:
                return
            yield rows
            tx, position = rows[-1][10], rows[-1][3]


def _fold(events: list[tuple[str, bytes]]) -> Any:
    """Decode a stream and fold it to a balance: the least an aggregate load can do."""
    balance: Any = 0
    for kind, data in events:
        e = _decoders[kind].decode(data)
        if kind == _DEPOSITED:
            balance += e.amount
    return balance


class _ReadModel:
    """W6's read model for the raw driver: the statements eventvault's projection runs, by hand."""

    def __init__(self, suffix: str, *, sqlite: bool) -> None:
        self.summary, self.history, self.checkpoint = f"lsum_{suffix}", f"lhist_{suffix}", f"lcp_{suffix}"
        mark = "?" if sqlite else "%s"

        def q(text: str) -> str:
            return text.replace("?", mark)

        self.insert_summary = q(
            f"INSERT INTO {self.summary} (account_id, owner_name, currency, balance_cents, "  # noqa: S608 - our own table
            "deposits, version) VALUES (?, ?, ?, 0, 0, ?) ON CONFLICT (account_id) DO NOTHING"
        )
        self.update_summary = q(
            f"UPDATE {self.summary} SET balance_cents = balance_cents + ?, "  # noqa: S608 - our own table
            "deposits = deposits + 1, version = ? WHERE account_id = ? AND version < ?"
        )
        self.insert_history = q(
            f"INSERT INTO {self.history} (account_id, version, amount_cents, description, "  # noqa: S608 - our own table
            "position) VALUES (?, ?, ?, ?, ?)"
        )
        self.save_checkpoint = q(f"UPDATE {self.checkpoint} SET cp_tx = ?, cp_pos = ?")  # noqa: S608
        self.totals = f"SELECT count(*), sum(balance_cents) FROM {self.summary}"  # noqa: S608

    def ddl(self) -> list[str]:
        return [
            *summary_schema(self.summary, self.history),
            f"CREATE TABLE {self.checkpoint} (cp_tx BIGINT NOT NULL, cp_pos BIGINT NOT NULL)",
            f"INSERT INTO {self.checkpoint} VALUES (0, 0)",  # noqa: S608
        ]

    def apply(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        """Apply (stream, version, position, event type, data) rows, decoding each event."""
        for stream, version, position, kind, data in rows:
            e = _decoders[kind].decode(data)
            if kind == _OPENED:
                cur.execute(self.insert_summary, (stream, e.owner_name, e.currency, version))
            else:
                cents = int(e.amount.scaleb(2))
                cur.execute(self.update_summary, (cents, version, stream, version))
                if cur.rowcount == 1:
                    cur.execute(self.insert_history, (stream, version, cents, e.description, position))


class Limit:
    """The raw-driver contender."""

    name = "limit"

    def __init__(self, backend: Backend, sizes: Sizes, prepare: Callable[[Place], None]) -> None:
        self.backend = backend
        self.sizes = sizes
        self._prepare = prepare  # creates eventvault's schema in a place

    # -- W1, W2 -------------------------------------------------------------------------------

    def write(self, place: Place, plan: Plan, *, per_event: bool) -> tuple[Timing, list[Any]]:
        """W1 or W2 with raw statements; returns the stream ids."""
        self._prepare(place)
        ids = [f"bench-{uuid.uuid4()}" for _ in plan.accounts]
        watch = Stopwatch()
        with self._writer(place) as (cur, append), watch.running():
            for stream, args, deposits in zip(ids, plan.accounts, plan.deposits, strict=True):
                if per_event:
                    append(cur, stream, 0, [(_OPENED, _opened(args))])
                    for k, d in enumerate(deposits, start=1):
                        append(cur, stream, k, [(_DEPOSITED, _deposited(d))])
                else:
                    events = [(_OPENED, _opened(args))] + [(_DEPOSITED, _deposited(d)) for d in deposits]
                    append(cur, stream, 0, events)
        return watch.timing(plan.events), ids

    def written(self, place: Place) -> tuple[int, Any]:
        """What the limit wrote to ``place``: the count of events and their deposits' sum (a check)."""
        if isinstance(self.backend, SQLiteBackend):
            conn = self.backend.connect(place)
            try:
                rows = conn.execute("SELECT event_type, data FROM events").fetchall()
            finally:
                conn.close()
        else:
            assert isinstance(self.backend, PostgresBackend)  # noqa: S101
            assert place.schema is not None  # noqa: S101
            query = sql.SQL("SELECT event_type, data FROM {}.events").format(sql.Identifier(place.schema))
            with self.backend.connect() as pg:
                rows = pg.execute(query).fetchall()
        return len(rows), _fold([(str(k), bytes(d)) for k, d in rows])

    def _writer(self, place: Place) -> _Writer:
        return _Writer(self.backend, place)

    # -- W3: the same streams eventvault wrote ------------------------------------------------------

    def load_each(self, place: Place, stream_ids: list[str]) -> tuple[Timing, Any]:
        """W3: select and decode each stream (in eventvault's data), folding it to a balance."""
        watch = Stopwatch()
        total: Any = 0
        if isinstance(self.backend, SQLiteBackend):
            conn = self.backend.connect(place)
            raw = _SQLite(self.backend)
            try:
                cur = conn.cursor()
                with watch.running():
                    for stream in stream_ids:
                        total += _fold(raw.read_stream(cur, stream))
            finally:
                conn.close()
        else:
            assert isinstance(self.backend, PostgresBackend)  # noqa: S101
            assert place.schema is not None  # noqa: S101
            query = _Postgres.stream_sql(place.schema)
            with self.backend.connect() as pg, pg.cursor() as pcur, watch.running():
                for stream in stream_ids:
                    rows = pcur.execute(query, (stream,), prepare=True).fetchall()
                    total += _fold([(r[4], r[8]) for r in rows])
        return watch.timing(len(stream_ids)), total

    # -- W4 ---------------------------------------------------------------------------------------------

    def read_log(self, place: Place) -> tuple[Timing, Any]:
        """W4: page through eventvault's log with its SELECT, decoding every event."""
        watch = Stopwatch()
        n = 0
        page = self.sizes.page
        if isinstance(self.backend, SQLiteBackend):
            conn = self.backend.connect(place)
            try:
                cur = conn.cursor()
                with watch.running():
                    for _ in range(self.sizes.log_reads):
                        for rows in _SQLite(self.backend).pages(cur, page):
                            for r in rows:
                                _decoders[r[4]].decode(r[8])
                                n += 1
            finally:
                conn.close()
        else:
            assert isinstance(self.backend, PostgresBackend)  # noqa: S101
            assert place.schema is not None  # noqa: S101
            raw = _Postgres(self.backend)
            with self.backend.connect() as pg, pg.cursor() as pcur, watch.running():
                for _ in range(self.sizes.log_reads):
                    for rows in raw.pages(pcur, place.schema, page):
                        for r in rows:
                            _decoders[r[4]].decode(r[8])
                            n += 1
        return watch.timing(n), n

    # -- W5 ---------------------------------------------------------------------------------------------

    def load_long(self, place: Place, stream_id: str, loads: int, *, snapshot: bool) -> tuple[Timing, Any]:
        """W5: select and decode the long stream (or its snapshot row and what follows it)."""
        watch = Stopwatch()
        result: Any = None
        if isinstance(self.backend, SQLiteBackend):
            conn = self.backend.connect(place)
            raw = _SQLite(self.backend)
            try:
                cur = conn.cursor()
                with watch.running():
                    for _ in range(loads):
                        if snapshot:
                            snap = raw.snapshot(cur, stream_id)
                            assert snap is not None  # noqa: S101
                            state = msgspec.json.decode(snap[1])
                            after = [
                                (r[3], r[7])
                                for r in cur.execute(
                                    _SQLITE_STREAM.replace("ORDER BY", "AND stream_version > ? ORDER BY"),
                                    (stream_id, snap[0]),
                                )
                            ]
                            result = (snap[0] + len(after), state["balance"])
                        else:
                            events = raw.read_stream(cur, stream_id)
                            result = (len(events), _fold(events))
            finally:
                conn.close()
        else:
            assert isinstance(self.backend, PostgresBackend)  # noqa: S101
            assert place.schema is not None  # noqa: S101
            s = sql.Identifier(place.schema)
            stream_query = _Postgres.stream_sql(place.schema)
            snap_query = (
                sql.SQL(
                    "SELECT stream_version, state FROM {s}.snapshots "
                    "WHERE stream_id = %s AND schema_version = 1"
                )
                .format(s=s)
                .as_bytes(None)
            )
            after_query = stream_query.replace(b"ORDER BY", b"AND stream_version > %s ORDER BY")
            with self.backend.connect() as pg, pg.cursor() as pcur, watch.running():
                for _ in range(loads):
                    if snapshot:
                        row = pcur.execute(snap_query, (stream_id,), prepare=True).fetchone()
                        assert row is not None  # noqa: S101
                        state = msgspec.json.decode(row[1])
                        rows = pcur.execute(after_query, (stream_id, row[0]), prepare=True).fetchall()
                        result = (row[0] + len(rows), state["balance"])
                    else:
                        rows = pcur.execute(stream_query, (stream_id,), prepare=True).fetchall()
                        result = (len(rows), _fold([(r[4], r[8]) for r in rows]))
        return watch.timing(loads), result

    # -- W6 ---------------------------------------------------------------------------------------------

    def project(self, place: Place, suffix: str, events: int) -> tuple[Timing, Any]:
        """W6: the same read-model statements, in batches of the same size, each with its checkpoint."""
        model = _ReadModel(suffix, sqlite=isinstance(self.backend, SQLiteBackend))
        batch = self.sizes.projection_batch
        watch = Stopwatch()
        if isinstance(self.backend, SQLiteBackend):
            conn = self.backend.connect(place)
            # The durability eventvault's read models commit at by default: derived
            # data, atomic but not waiting for the disk (read_models_for, durable=False).
            conn.execute("PRAGMA synchronous = NORMAL")
            try:
                cur = conn.cursor()
                with watch.running():
                    cur.execute("BEGIN IMMEDIATE")
                    for ddl in model.ddl():
                        cur.execute(ddl)
                    cur.execute("COMMIT")
                    for rows in _SQLite(self.backend).pages(cur, batch):
                        cur.execute("BEGIN IMMEDIATE")
                        # Log rows: position, event_id, stream_id, stream_version, event_type, ..., data.
                        model.apply(cur, [(r[2], r[3], r[0], r[4], r[8]) for r in rows])
                        cur.execute(model.save_checkpoint, (0, rows[-1][0]))
                        cur.execute("COMMIT")
                total = cur.execute(model.totals).fetchone()
            finally:
                conn.close()
            return watch.timing(events), tuple(total or ())
        assert isinstance(self.backend, PostgresBackend)  # noqa: S101
        assert place.schema is not None  # noqa: S101
        raw = _Postgres(self.backend)
        with self.backend.connect() as reader, self.backend.connect(autocommit=False) as writer:
            rcur, wcur = reader.cursor(), writer.cursor()
            wcur.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(place.schema)))
            wcur.execute("SET synchronous_commit = off")  # as eventvault's read models, above
            writer.commit()
            with watch.running():
                for ddl in model.ddl():
                    wcur.execute(ddl.encode())
                writer.commit()
                for rows in raw.pages(rcur, place.schema, batch):
                    # Log rows: event_id, stream_id, stream_version, position, event_type, ..., data, .., tx.
                    model.apply(wcur, [(r[1], r[2], r[3], r[4], r[8]) for r in rows])
                    wcur.execute(model.save_checkpoint.encode(), (rows[-1][10], rows[-1][3]))
                    writer.commit()
            totals = wcur.execute(model.totals.encode()).fetchone()
            writer.commit()
        return watch.timing(events), tuple(totals or ())

    # -- W7 ---------------------------------------------------------------------------------------------

    def concurrent(self, place: Place, plan: Plan) -> Timing:
        """W7: a thread and a connection per account of ``plan``, all at once, an append per event."""
        self._prepare(place)
        n = len(plan.accounts)
        writers = [_Writer(self.backend, place) for _ in range(n)]
        opened = [w.__enter__() for w in writers]
        barrier = threading.Barrier(n + 1)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            cur, append = opened[i]
            stream = f"bench-{uuid.uuid4()}"
            barrier.wait()
            try:
                append(cur, stream, 0, [(_OPENED, _opened(plan.accounts[i]))])
                for k, d in enumerate(plan.deposits[i], start=1):
                    append(cur, stream, k, [(_DEPOSITED, _deposited(d))])
            except Exception as exc:  # noqa: BLE001 - reported after the run
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        watch = Stopwatch()
        try:
            with watch.running():
                barrier.wait()
                for t in threads:
                    t.join()
        finally:
            for w in writers:
                w.__exit__(None, None, None)
        if errors:
            raise RuntimeError(f"{len(errors)} raw writers failed: {errors[0]!r}") from errors[0]
        return watch.timing(plan.events)


class _Writer:
    """A raw connection and its append function, as a context manager."""

    def __init__(self, backend: Backend, place: Place) -> None:
        self.backend = backend
        self.place = place
        self._close: Callable[[], None] = lambda: None

    def __enter__(self) -> tuple[Any, Callable[[Any, str, int, Sequence[tuple[str, bytes]]], None]]:
        if isinstance(self.backend, SQLiteBackend):
            conn = self.backend.connect(self.place)
            self._close = conn.close
            return conn.cursor(), _SQLite(self.backend).append
        assert isinstance(self.backend, PostgresBackend)  # noqa: S101
        assert self.place.schema is not None  # noqa: S101
        pg = self.backend.connect()
        self._close = pg.close
        return pg.cursor(), _Postgres(self.backend).appender(self.place.schema)

    def __exit__(self, *exc: object) -> None:
        self._close()
