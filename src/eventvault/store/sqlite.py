"""``sqlite:///path.db``: the embedded default store, one file, durable, group-committed.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` and
``sqlite:///:memory:`` (a private database that lives as long as the store).

Options, from the URL query string (``sqlite:///app.db?synchronous=NORMAL``) or
keyword arguments of :func:`~eventvault.store.create_store`:

``synchronous`` = ``FULL`` (default) | ``EXTRA`` | ``NORMAL``
    ``FULL`` syncs the write-ahead log on every commit, so an acknowledged append
    survives a power cut. ``NORMAL`` syncs only at checkpoints: faster, and a
    power cut may lose the last appends (never corrupt the file). ``OFF`` is
    refused: an event store that forgets acknowledged events is not one.
``busy_timeout`` = seconds (default ``5``)
    How long to wait for another process's write lock before the call fails with
    :class:`~eventvault.errors.StoreUnavailable`.
``readers`` = ``0`` .. ``64`` (default ``4``)
    Read connections, each on its own thread, so reads never queue behind the
    writer. ``0`` runs every read on the writer's thread (``:memory:`` always
    does: every connection to ``:memory:`` would be a database of its own).
``writer`` = ``auto`` (default) | ``thread``
    ``auto`` commits a group of appends on the event loop's own thread when the
    writer thread is idle and this store's recent commits took under 1 ms (a
    fast disk), and hands it to the writer thread otherwise. ``thread`` always
    hands appends to the writer thread, so the event loop never waits for a
    commit, however short.

How it works
------------
* **One writer.** One write connection, used by one thread at a time. The
  appends made while the event loop runs its ready tasks are gathered into
  ONE ``BEGIN IMMEDIATE`` transaction (group commit), each inside its own
  ``SAVEPOINT``. While commits are fast and the writer thread idle, that
  transaction runs right there on the loop's thread (two thread hand-offs cost
  more than a commit on a fast disk); otherwise, and whenever another process
  holds the write lock, a dedicated writer thread runs it, taking every append
  waiting in its queue at that moment. A conflict (wrong expected version, an event id stored
  elsewhere) rolls back only its savepoint and fails only its own append. A
  caller's future is resolved only after ``COMMIT`` succeeded; if ``COMMIT``
  fails, every append of the batch fails. Other processes may write the same
  file: ``BEGIN IMMEDIATE`` waits for them up to ``busy_timeout``.
* **Readers** are separate connections. WAL gives each read statement (or read
  transaction) a snapshot of committed data, and it never waits for the writer.
  Reads that are small by construction (a stream's first 64 events, a version,
  the head, a snapshot) run on the calling thread, on a connection of its own
  that never waits for a lock: the trip to a reader thread and back costs
  more than such a read. Longer reads, pages of the log, and any read SQLite
  answers "busy" go to the reader threads.
* **Gap-safe positions with ``tx = 0``.** SQLite lets one transaction at a time
  write the file (across processes too), and each new event gets position
  ``max(position) + 1`` (SQLite's rowid rule) inside that transaction. A
  reader's snapshot holds a transaction's events completely or not at all. So
  when a reader sees position ``p``, every lower position is either visible too
  or will never exist: position order is commit order, and a checkpoint needs
  no transaction id (it is 0).
* **Schema** is created and migrated by the store on open, inside
  ``BEGIN IMMEDIATE``, so processes that open one new file at the same moment
  take turns and the later ones find the work done. A file whose schema is newer
  than this code raises :class:`~eventvault.errors.SchemaVersionError`.
* **Errors.** No ``sqlite3`` exception leaves this module: a busy/locked database
  and a file that cannot be opened become :class:`~eventvault.errors.StoreUnavailable`
  (retry later), a full disk (``SQLITE_FULL``) :class:`~eventvault.errors.StorageFull`
  (retry once space is freed), anything else :class:`~eventvault.errors.StoreError`
  with SQLite's message.

* **Live wake-ups.** :meth:`SQLiteEventStore.add_commit_listener` registers a
  callback told the new head after each commit of this store (not of other
  processes: followers of the log still poll).

Cancelling a waiting ``append`` does not withdraw it once the writer has taken
it: it may still land (a retry with the same event ids is safe either way).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Self, cast

from eventvault.domain import EventRegistry
from eventvault.errors import (
    EventVaultError,
    InvalidInput,
    InvalidStoreURL,
    InvalidStreamId,
    SchemaVersionError,
    StorageFull,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from eventvault.store.base import (
    EventStore,
    Found,
    PreparedEvent,
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
    LogPage,
    RecordedEvent,
    Snapshot,
    datetime_to_micros,
    micros_to_datetime,
)

__all__ = ["SQLiteEventStore", "SQLiteStats"]

log = logging.getLogger("eventvault.store.sqlite")

SCHEMA_COMPONENT: Final = "store"
"""This module's row in ``eventvault_schema`` (projections may keep rows of their own)."""

# Each migration is a list of statements, applied in order inside one
# transaction together with the version bump. Never edit a released one: append.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        # position is the rowid, so the log is clustered in global order and
        # read_all is a range scan of the table itself. SQLite gives a new row
        # max(rowid) + 1, and the writer inserts under the write lock, so new
        # positions are above every committed one (the gap-safety argument in
        # the module docstring). Events are never deleted, so a position is never
        # handed out twice; AUTOINCREMENT would only add a write to sqlite_sequence
        # on every commit. (Its one exception, a table holding rowid 2**63 - 1,
        # cannot happen at any real rate of appends.)
        # Times are integer microseconds since the epoch (compact, ordered, no
        # parsing); data is the JSON bytes as written (BLOB: no text decoding on
        # read). metadata is NULL when empty, which most events are.
        # No index on event_type: every index costs each append, and a filtered
        # read_all scans forward from its checkpoint, which then moves past the
        # scanned range, so a catch-up reads the log once in total.
        """
        CREATE TABLE events (
            position       INTEGER PRIMARY KEY,
            event_id       BLOB    NOT NULL UNIQUE,
            stream_id      TEXT    NOT NULL,
            stream_version INTEGER NOT NULL,
            event_type     TEXT    NOT NULL,
            schema_version INTEGER NOT NULL,
            occurred_at    INTEGER NOT NULL,
            recorded_at    INTEGER NOT NULL,
            data           BLOB    NOT NULL,
            metadata       BLOB,
            UNIQUE (stream_id, stream_version)
        )
        """,
        # No `streams` table of current versions: the UNIQUE (stream_id,
        # stream_version) index above already answers "the stream's version" with
        # one seek to its last entry, and with one writer there is no row to lock
        # (PostgreSQL needs one; SQLite does not). A streams table would cost a
        # statement and one more B-tree page in the WAL on every commit (about
        # 15 % of single-event append throughput at synchronous=FULL) and could
        # disagree with the log; this way the version IS the log.
        # Not WITHOUT ROWID: states can be large, and such rows belong in a rowid table.
        """
        CREATE TABLE snapshots (
            stream_id      TEXT    NOT NULL,
            schema_version INTEGER NOT NULL,
            stream_version INTEGER NOT NULL,
            state          BLOB    NOT NULL,
            created_at     INTEGER NOT NULL,
            PRIMARY KEY (stream_id, schema_version)
        )
        """,
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

# A table of its own rather than PRAGMA user_version: read models may share the
# file, and whatever else uses user_version must not move our version.
_SQL_SCHEMA_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS eventvault_schema (
        component TEXT    PRIMARY KEY,
        version   INTEGER NOT NULL
    ) WITHOUT ROWID
"""
_SQL_HAS_SCHEMA_TABLE: Final = (
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'eventvault_schema'"
)
_SQL_SCHEMA_VERSION: Final = "SELECT version FROM eventvault_schema WHERE component = ?"
_SQL_SET_SCHEMA_VERSION: Final = (
    "INSERT INTO eventvault_schema (component, version) VALUES (?, ?) "
    "ON CONFLICT (component) DO UPDATE SET version = excluded.version"
)

_SQL_HEAD: Final = "SELECT max(position) FROM events"
_SQL_VERSION: Final = "SELECT max(stream_version) FROM events WHERE stream_id = ?"
_SQL_INSERT: Final = (
    "INSERT INTO events (event_id, stream_id, stream_version, event_type, "
    "schema_version, occurred_at, recorded_at, data, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_LAST_POSITION: Final = "SELECT last_insert_rowid()"

_STREAM_COLUMNS: Final = (
    "event_id, stream_version, position, event_type, schema_version, occurred_at, recorded_at, data, metadata"
)
_SQL_STREAM: Final = (
    f"SELECT {_STREAM_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version BETWEEN ?2 AND ?3 "  # noqa: S608
    "ORDER BY stream_version {order} LIMIT ?4"
)
# as_of: the prefix of the stream up to the last event recorded by then (not
# "the events recorded by then": after a clock step back, that is not a prefix).
_SQL_STREAM_AS_OF: Final = (
    f"SELECT {_STREAM_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version BETWEEN ?2 AND ?3 "  # noqa: S608
    "AND stream_version <= (SELECT coalesce(max(stream_version), 0) FROM events "
    "WHERE stream_id = ?1 AND recorded_at <= ?5) "
    "ORDER BY stream_version {order} LIMIT ?4"
)
_SQL_STREAM_FWD: Final = _SQL_STREAM.format(order="ASC")
_SQL_STREAM_BACK: Final = _SQL_STREAM.format(order="DESC")
_SQL_STREAM_AS_OF_FWD: Final = _SQL_STREAM_AS_OF.format(order="ASC")
_SQL_STREAM_AS_OF_BACK: Final = _SQL_STREAM_AS_OF.format(order="DESC")
_LOG_COLUMNS: Final = (
    "position, event_id, stream_id, stream_version, event_type, schema_version, "
    "occurred_at, recorded_at, data, metadata"
)
_SQL_LOG: Final = f"SELECT {_LOG_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"  # noqa: S608 - constant

_SQL_SAVE_SNAPSHOT: Final = (
    "INSERT INTO snapshots (stream_id, schema_version, stream_version, state, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id, schema_version) DO UPDATE SET "
    "stream_version = excluded.stream_version, state = excluded.state, created_at = excluded.created_at "
    "WHERE excluded.stream_version >= snapshots.stream_version"
)
_SQL_LOAD_SNAPSHOT: Final = (
    "SELECT stream_version, state, created_at FROM snapshots WHERE stream_id = ? AND schema_version = ?"
)

_MAX_INT: Final = 2**63 - 1
_EMPTY_META: Final = b"{}"
_IN_CHUNK: Final = 500  # bound parameters per IN (...) list, well under every SQLite's limit
_INLINE_ROWS: Final = 64  # a read on the caller's thread returns at most this many events
_MAX_BATCH: Final = 512  # appends per group commit: bounds how long one transaction holds the lock

_SYNCHRONOUS: Final = ("FULL", "EXTRA", "NORMAL")
_MAX_READERS: Final = 64
_MAX_BUSY_TIMEOUT: Final = 3600.0
_OPTIONS: Final = ("busy_timeout", "readers", "synchronous", "writer")
_WRITERS: Final = ("auto", "thread")
_INLINE_COMMIT_US: Final = 1000.0  # writer=auto commits on the loop's thread while commits take less

_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_FULL: Final = 13
_SQLITE_CANTOPEN: Final = 14

# A queued call: (is_write, function, arguments, the caller's future, its loop).
_Job = tuple[bool, Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], asyncio.AbstractEventLoop]
_Outcome = tuple[asyncio.Future[Any] | None, bool, Any]
_STOP: Final = None
_NOT_INLINE: Final = object()


@dataclass(slots=True)
class SQLiteStats:
    """Counters kept by the writer thread, for tests and benchmarks (read-only to others)."""

    transactions: int = 0
    """Write transactions committed."""
    inline_transactions: int = 0
    """Of those, the ones committed on an event loop's thread (``writer=auto``)."""
    appends: int = 0
    """Appends those transactions stored (idempotent retries write nothing and are not counted)."""
    events: int = 0
    """Events those appends stored."""
    conflicts: int = 0
    """Appends refused alone inside a batch (wrong version, event id stored elsewhere)."""
    largest_batch: int = 0
    """The most writes one transaction carried."""


class _Conflict(Exception):
    """An append hit a conflict; decided after its writes are rolled back."""

    def __init__(
        self,
        stream_id: str,
        events: Sequence[PreparedEvent],
        mismatch: WrongExpectedVersion | None,
        integrity: sqlite3.IntegrityError | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.events = events
        self.mismatch = mismatch
        self.integrity = integrity


def _settle(outcomes: list[_Outcome]) -> None:
    """Resolve futures on their own loop (runs there, via call_soon_threadsafe)."""
    for fut, ok, value in outcomes:
        if fut is None:  # not a caller: a wake-up of the store's waiters, to run first
            value()
            continue
        if fut.done():  # cancelled while we worked
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


_Post = tuple[asyncio.AbstractEventLoop, list[_Outcome]]  # outcomes for one loop


def _post(loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
    if loop is asyncio._get_running_loop():  # noqa: SLF001 - public in asyncio.events; a group run inline
        _settle(outcomes)
        return
    # A closed loop raises RuntimeError: its caller is gone, nobody waits any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, outcomes)


def _holds(expected: ExpectedVersion, actual: int) -> bool:
    """Whether a stream at ``actual`` satisfies ``expected`` (the check of check_version_matches)."""
    if expected is ANY:
        return True
    if expected is STREAM_EXISTS:
        return actual > 0
    if expected is NO_STREAM:
        return actual == 0
    return actual == expected


def _parse_options(options: dict[str, Any]) -> tuple[str, float, int, str]:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise InvalidStoreURL(
            f"unknown SQLite store option(s) {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(_OPTIONS)}"
        )
    sync = options.get("synchronous", "FULL")
    if not isinstance(sync, str) or sync.upper() not in _SYNCHRONOUS:
        raise InvalidStoreURL(
            f"synchronous must be one of {', '.join(_SYNCHRONOUS)} (OFF is refused: it can lose "
            f"acknowledged events), got {sync!r}"
        )
    timeout = options.get("busy_timeout", 5.0)
    seconds = _as_number(timeout, float)
    if not 0 <= seconds <= _MAX_BUSY_TIMEOUT:  # also refuses NaN
        raise InvalidStoreURL(
            f"busy_timeout is a number of seconds from 0 to {_MAX_BUSY_TIMEOUT:g}, got {timeout!r}"
        )
    readers = options.get("readers", 4)
    count = -1 if isinstance(readers, float) else _as_number(readers, int)
    if not 0 <= count <= _MAX_READERS:
        raise InvalidStoreURL(f"readers is an int from 0 to {_MAX_READERS}, got {readers!r}")
    writer = options.get("writer", "auto")
    if writer not in _WRITERS:
        raise InvalidStoreURL(f"writer must be one of {', '.join(_WRITERS)}, got {writer!r}")
    return sync.upper(), seconds, int(count), writer


def _as_number(value: object, kind: type[float | int]) -> float:
    """``value`` (a number, or its text from a URL) as ``kind``; NaN when it is neither."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return math.nan
    try:
        return kind(value)
    except ValueError:
        return math.nan


def _check_text(what: str, text: str, error: type[InvalidInput] = InvalidStreamId) -> None:
    """SQLite stores text as UTF-8: a lone surrogate can be neither stored nor looked up."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise error(f"{what} must be valid Unicode (no lone surrogates): {text!r}") from None


def _rows(stream_id: str, version: int, events: Sequence[PreparedEvent], now: int) -> list[tuple[Any, ...]]:
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


class SQLiteEventStore(EventStore):
    """An event store in one SQLite file (see the module documentation for options)."""

    scheme = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registry: EventRegistry | None = None,
        **options: Any,
    ) -> None:
        super().__init__(registry=registry)
        path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise InvalidStoreURL(f"a SQLite database path is a non-empty str, got {path!r}")
        self._memory = path == ":memory:"
        self.path = path if self._memory else str(Path(path).resolve())
        """The database file (absolute), or ``:memory:``."""
        self.synchronous, self.busy_timeout, self.readers, self.writer = _parse_options(options)
        if self._memory and "readers" in options and self.readers:
            raise InvalidStoreURL(
                "readers must be 0 for sqlite:///:memory: (each connection to :memory: is a database "
                f"of its own), got {options['readers']!r}"
            )
        if self._memory:
            self.readers = 0
        self.stats = SQLiteStats()
        """Writer counters: ``stats.transactions < stats.appends`` proves group commit."""

        self._lock = threading.Lock()  # orders submissions against close()
        self._open_lock = threading.Lock()  # one open at a time; close waits for it
        self._opened = False
        self._threads: list[threading.Thread] = []
        self._wq: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._rq: queue.SimpleQueue[_Job | None] = self._wq if self.readers == 0 else queue.SimpleQueue()
        self._listeners: tuple[Callable[[Checkpoint], None], ...] = ()
        # Small reads run on the caller's thread, on a connection of that thread's own.
        self._inline = threading.local()
        self._inline_cursors: list[tuple[sqlite3.Cursor, threading.Lock]] = []
        # The write connection: used by the writer thread, or by an event loop's
        # thread for a group committed there, never by two at once (_wlock).
        self._wlock = threading.Lock()
        self._wcur: sqlite3.Cursor | None = None
        # The writer thread resolves callers' futures only once it has let go of
        # _wlock, so a caller it wakes finds the write connection free (_resolve).
        self._held = threading.local()
        self._wait_locks = True  # its busy timeout: True = busy_timeout, False = 0
        self._commit_us = 0.0  # moving average of how long COMMIT takes
        self._pending: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # writer=auto: the next group
        # State of the transaction in progress.
        self._tx_head = 0  # the last position the transaction in progress wrote
        self._now_us = 0

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> Self:
        """Open the file, switch it to WAL and create or migrate the schema. Idempotent.

        A closed store stays closed (StoreClosed): make a new one to open the file again.
        """
        self._check_open()
        if not self._opened:
            await asyncio.to_thread(self._open_sync)
        return self

    def _open_sync(self) -> None:
        with self._open_lock:
            if self._closed:
                raise StoreClosed(f"this sqlite store ({self.path}) is closed")
            if self._opened:
                return
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            writer = threading.Thread(
                target=self._writer_main, args=(ready,), name="eventvault-sqlite-writer", daemon=True
            )
            writer.start()
            try:
                ready.result()
            except BaseException:
                writer.join()
                raise
            threads = [writer]
            for i in range(self.readers):
                reader = threading.Thread(
                    target=self._reader_main, name=f"eventvault-sqlite-reader-{i}", daemon=True
                )
                reader.start()
                threads.append(reader)
            self._threads = threads
            self._opened = True

    async def close(self) -> None:
        """Stop the threads and close every connection. Idempotent.

        Calls still waiting in a queue, and every call after this, raise StoreClosed.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._wq.put(_STOP)
                if self._rq is not self._wq:
                    for _ in range(self.readers):
                        self._rq.put(_STOP)
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        with self._open_lock:  # an open in progress finishes (and then sees the STOPs) first
            threads, self._threads = self._threads, []
        for t in threads:
            t.join()
        with self._lock:
            inline, self._inline_cursors = self._inline_cursors, []
        for cur, lock in inline:
            with lock:  # a read in progress on another thread finishes first
                cur.connection.close()

    def _connect(self, *, shared: bool = False) -> sqlite3.Connection:
        # isolation_level=None: the module's own BEGIN/COMMIT/SAVEPOINT statements
        # are the only transaction control; sqlite3 must not insert its own.
        # timeout sets SQLite's busy timeout: wait for other processes' locks.
        return sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=not shared
        )

    def _map_error(self, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        name = getattr(exc, "sqlite_errorname", None)
        message = f"{exc} [{name}]" if name else str(exc)
        err: StoreError
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "is locked" in str(exc):
            err = StoreUnavailable(
                f"SQLite database {self.path} is busy ({message}): another connection held it "
                f"longer than busy_timeout={self.busy_timeout:g}s; retry later"
            )
        elif primary == _SQLITE_CANTOPEN:
            err = StoreUnavailable(f"cannot open SQLite database file {self.path}: {message}")
        elif primary == _SQLITE_FULL:
            # The transaction was rolled back whole: nothing of it is in the file, and
            # the same append succeeds once space is freed.
            err = StorageFull(
                f"the disk of SQLite database {self.path} is full ({message}); nothing was written"
            )
        else:
            err = StoreError(f"SQLite failed on {self.path}: {message}")
        err.__cause__ = exc
        return err

    def _setup_writer(self, conn: sqlite3.Connection) -> None:
        if not self._memory:
            self._use_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._migrate(conn)

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        # The journal mode is stored in the file. Switching needs a moment of
        # exclusive access, and SQLite does not always run the busy handler for
        # it (processes opening one new file together see "database is locked"
        # at once), so retry here until busy_timeout is spent.
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode.lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)  # waiting on another process is inherent here
                delay = min(delay * 2, 0.05)
        if mode.lower() != "wal":
            raise StoreError(
                f"SQLite database {self.path} cannot use write-ahead logging (journal mode stays "
                f"{mode!r}); WAL needs a local file system with shared memory"
            )

    def _stored_schema_version(self, conn: sqlite3.Connection) -> int:
        if not conn.execute(_SQL_HAS_SCHEMA_TABLE).fetchone()[0]:
            return 0
        row = conn.execute(_SQL_SCHEMA_VERSION, (SCHEMA_COMPONENT,)).fetchone()
        return 0 if row is None else int(row[0])

    def _check_schema_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"SQLite database {self.path} has event store schema version {version}, newer "
                f"than this code's {SCHEMA_VERSION}: upgrade eventvault to open it"
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Look first without the write lock: an up-to-date file (every open but
        # the first) must not wait for other processes' writers.
        version = self._stored_schema_version(conn)
        self._check_schema_version(version)
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the lock: another process may have migrated meanwhile.
            conn.execute(_SQL_SCHEMA_TABLE)
            version = self._stored_schema_version(conn)
            self._check_schema_version(version)
            for migration in MIGRATIONS[version:]:
                for statement in migration:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(_SQL_SET_SCHEMA_VERSION, (SCHEMA_COMPONENT, SCHEMA_VERSION))
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    # -- the writer thread ---------------------------------------------------

    def _writer_main(self, ready: concurrent.futures.Future[None]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect(shared=True)
            self._setup_writer(conn)
        except BaseException as exc:  # noqa: BLE001 - handed to open(), which raises it
            if conn is not None:
                conn.close()
            ready.set_exception(self._map_error(exc) if isinstance(exc, sqlite3.Error) else exc)
            return
        cur = conn.cursor()
        self._wcur = cur
        ready.set_result(None)
        try:
            self._writer_loop(conn, cur)
        finally:
            with self._wlock:  # a group committing on a loop's thread finishes first
                self._wcur = None
                conn.close()

    def _writer_loop(self, conn: sqlite3.Connection, cur: sqlite3.Cursor) -> None:
        while True:
            batch, stop = self._take_batch()
            if self._closed:
                self._fail_closed(batch)
            elif batch:
                held: list[_Post] = []
                try:
                    with self._wlock:
                        self._held.posts = held
                        try:
                            self._run_batch(conn, cur, batch)
                        finally:
                            self._held.posts = None
                finally:
                    for loop, outcomes in held:
                        _post(loop, outcomes)
            if stop:
                return

    def _run_batch(self, conn: sqlite3.Connection, cur: sqlite3.Cursor, batch: list[_Job]) -> None:
        if not self._wait_locks:
            cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._wait_locks = True
        writes = []
        for job in batch:
            if job[0]:
                writes.append(job)
            else:
                # Reads that share the writer's connection (readers=0) run
                # outside any write transaction: they must never see
                # writes that are not committed yet.
                self._run_read(cur, job)
        writes = [job for job in writes if not job[3].cancelled()]
        if writes:
            self._commit_batch(conn, cur, writes)

    def _take_batch(self) -> tuple[list[_Job], bool]:
        """Wait for a job, then take every job already waiting: the group of one commit."""
        job = self._wq.get()
        if job is _STOP:
            return [], True
        batch = [job]
        q = self._wq
        # Only this thread takes from the queue, so "not empty" means get() won't block.
        while len(batch) < _MAX_BATCH and not q.empty():
            job = q.get()
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _resolve(self, loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
        """Hand ``outcomes`` to ``loop``: at once, or after the writer thread's batch."""
        held: list[_Post] | None = getattr(self._held, "posts", None)
        if held is None:
            _post(loop, outcomes)
        else:
            held.append((loop, outcomes))

    def _fail_closed(self, jobs: list[_Job]) -> None:
        for job in jobs:
            _post(job[4], [(job[3], False, StoreClosed(f"this sqlite store ({self.path}) is closed"))])

    def _commit_batch(
        self, conn: sqlite3.Connection, cur: sqlite3.Cursor, jobs: list[_Job], *, inline: bool = False
    ) -> bool:
        """Run ``jobs`` in one transaction, each in its own savepoint, and commit once.

        Returns False, having done nothing, when ``inline`` and another process
        holds the write lock (the inline path never waits for it).
        """
        try:
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if inline and getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY:
                    return False
                raise
            self._now_us = time.time_ns() // 1000
            done = self._append_together(cur, jobs) if len(jobs) > 1 else None
            if done is None:
                single = len(jobs) == 1  # one job: its transaction is its savepoint
                done = [self._run_write(cur, job, single=single) for job in jobs]
            if conn.in_transaction:  # not when a single job rolled back
                self._commit(cur, inline=inline)
        except Exception as exc:  # every caller of the batch gets it
            # The batch is lost as a whole: whatever failed (the lock, the disk,
            # COMMIT itself) may have undone the earlier savepoints too.
            if conn.in_transaction:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    log.warning("ROLLBACK after a failed batch failed too", exc_info=True)
            if not isinstance(exc, sqlite3.Error):
                log.error("the SQLite writer failed a batch", exc_info=exc)  # noqa: TRY400 - exc_info given
            for job in jobs:
                error = self._map_error(exc) if isinstance(exc, sqlite3.Error) else exc
                self._resolve(job[4], [(job[3], False, error)])
            return True
        self._finish_batch(jobs, done)
        return True

    def _commit(self, cur: sqlite3.Cursor, *, inline: bool) -> None:
        """COMMIT, timed: writer=auto keeps commits off the event loop while they are slow."""
        started = time.perf_counter()
        cur.execute("COMMIT")
        self._commit_us += ((time.perf_counter() - started) * 1e6 - self._commit_us) * 0.2
        self.stats.transactions += 1
        self.stats.inline_transactions += inline

    def _append_together(self, cur: sqlite3.Cursor, jobs: list[_Job]) -> list[tuple[bool, Any, int]] | None:
        """Run a batch of appends that all hold with a few statements in all; None: go one by one.

        Under load a batch is mostly appends to different streams, all at the
        versions their writers expect. Their stream versions are read with one
        query and all their rows inserted with one statement, so the writer's
        work (and its trips in and out of SQLite, each of which must win the
        GIL back) hardly grows with the batch. A batch with anything else in it
        (a version that does not hold, which needs the idempotency check; an
        event id twice; a job that is not an append) returns None before
        writing anything, and runs one job per savepoint; so does one whose
        insert breaks a constraint, after this transaction is rolled back.
        """
        appends: list[tuple[str, list[PreparedEvent], ExpectedVersion]] = []
        seen: set[uuid.UUID] = set()
        for job in jobs:
            fn, args = job[1], job[2]
            if getattr(fn, "__func__", None) is not SQLiteEventStore._write_append:
                return None
            for e in args[1]:
                if e.event_id in seen:
                    return None
                seen.add(e.event_id)
            appends.append(args)
        versions = self._stream_versions(cur, {a[0] for a in appends})
        now = self._now_us
        rows: list[tuple[Any, ...]] = []
        ends: list[tuple[str, int, int]] = []  # stream, its new version, events appended
        for stream_id, events, expected in appends:
            version = versions[stream_id]
            if not _holds(expected, version):
                return None
            rows.extend(_rows(stream_id, version, events, now))
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
        # last position fixes them all, in the order of the jobs.
        last = cur.execute(_SQL_LAST_POSITION).fetchone()[0]
        position = last - len(rows)
        done: list[tuple[bool, Any, int]] = []
        for stream_id, version, n in ends:
            positions = tuple(range(position + 1, position + n + 1))
            position += n
            done.append((True, AppendResult(stream_id, version, positions, Checkpoint(0, positions[-1])), n))
        self._tx_head = last
        return done

    @staticmethod
    def _stream_versions(cur: sqlite3.Cursor, streams: set[str]) -> dict[str, int]:
        """The current version of each stream (0 for none), a few hundred per query."""
        out: dict[str, int] = {}
        ordered = list(streams)
        for i in range(0, len(ordered), _IN_CHUNK):
            chunk = ordered[i : i + _IN_CHUNK]
            # A correlated max() per stream is one index seek each; max() with
            # GROUP BY over an IN list would walk every version of every stream.
            sql = (
                f"WITH s(id) AS (VALUES {', '.join(['(?)'] * len(chunk))}) "  # noqa: S608 - placeholders only
                "SELECT id, (SELECT max(stream_version) FROM events WHERE stream_id = s.id) FROM s"
            )
            for stream_id, version in cur.execute(sql, chunk):
                out[stream_id] = version or 0
        return out

    def _finish_batch(self, jobs: list[_Job], done: list[tuple[bool, Any, int]]) -> None:
        """After COMMIT: count, tell the listeners, then resolve the callers' futures."""
        stats = self.stats
        stats.largest_batch = max(stats.largest_batch, len(jobs))
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for job, (ok, value, events) in zip(jobs, done, strict=True):
            if events:
                stats.appends += 1
                stats.events += events
            elif not ok:
                stats.conflicts += 1
            by_loop.setdefault(job[4], []).append((job[3], ok, value))
        if any(events for _, _, events in done):
            # Before the futures: when an append returns, listeners have heard of it.
            # Waiters on a loop that also gets outcomes are woken by the same
            # callback, first: one wake-up of that loop per commit, not two.
            wait_loop = self._wait_loop
            if wait_loop is not None and wait_loop in by_loop:
                by_loop[wait_loop].insert(0, (None, True, self._wake_waiters))
                self._notify(Checkpoint(0, self._tx_head), announce=False)
            else:
                self._notify(Checkpoint(0, self._tx_head))
        for loop, outcomes in by_loop.items():
            self._resolve(loop, outcomes)

    def _run_write(self, cur: sqlite3.Cursor, job: _Job, *, single: bool) -> tuple[bool, Any, int]:
        """Run one write job: (succeeded, its result or error, events it stored)."""
        _, fn, args, _, _ = job
        if not single:
            cur.execute("SAVEPOINT job")
        try:
            value = fn(cur, *args)
            done = (True, value, len(value.positions) if isinstance(value, AppendResult) else 0)
        except _Conflict as conflict:
            cur.execute("ROLLBACK" if single else "ROLLBACK TO job")
            try:
                done = (True, self._decide_conflict(cur, conflict), 0)
            except EventVaultError as exc:
                done = (False, exc, 0)
        if not single:
            cur.execute("RELEASE job")
        return done

    def _write_append(
        self, cur: sqlite3.Cursor, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        version = cur.execute(_SQL_VERSION, (stream_id,)).fetchone()[0] or 0
        if version != expected and not _holds(expected, version):
            raise _Conflict(stream_id, events, WrongExpectedVersion(stream_id, expected, version))
        now = self._now_us
        n = len(events)
        try:
            if n == 1:
                cur.execute(_SQL_INSERT, _rows(stream_id, version, events, now)[0])
                last = cast("int", cur.lastrowid)  # set by every INSERT
            else:
                cur.executemany(_SQL_INSERT, _rows(stream_id, version, events, now))
                # The rows of one executemany under the write lock got consecutive
                # rowids (each max + 1), so the last one fixes them all.
                last = cur.execute(_SQL_LAST_POSITION).fetchone()[0]
        except sqlite3.IntegrityError as exc:
            raise _Conflict(stream_id, events, None, exc) from None
        self._tx_head = last
        return AppendResult(stream_id, version + n, tuple(range(last - n + 1, last + 1)), Checkpoint(0, last))

    def _decide_conflict(self, cur: sqlite3.Cursor, conflict: _Conflict) -> AppendResult:
        """After rolling back: an idempotent retry's first result, or the error to raise."""
        found = self._find(cur, conflict.events)
        done = idempotent_result(conflict.stream_id, conflict.events, found)
        if done is not None:
            return done
        if conflict.mismatch is not None:
            raise conflict.mismatch
        raise StoreError(
            f"append to {conflict.stream_id!r} broke a constraint with no stored event id to "
            f"explain it: {conflict.integrity}"
        )

    @staticmethod
    def _find(cur: sqlite3.Cursor, events: Sequence[PreparedEvent]) -> dict[uuid.UUID, Found]:
        found: dict[uuid.UUID, Found] = {}
        ids = [e.event_id.bytes for e in events]
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            sql = (
                "SELECT event_id, stream_id, stream_version, position FROM events "  # noqa: S608 - placeholders only
                f"WHERE event_id IN ({', '.join('?' * len(chunk))})"
            )
            for event_id, stream_id, version, position in cur.execute(sql, chunk):
                found[uuid.UUID(bytes=event_id)] = Found(stream_id, version, position, 0)
        return found

    @staticmethod
    def _write_snapshot(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> None:
        cur.execute(_SQL_SAVE_SNAPSHOT, row)

    def _notify(self, head: Checkpoint, *, announce: bool = True) -> None:
        if announce:
            self._announce_append()  # wakes this store's wait_for_events
        for listener in self._listeners:
            try:
                listener(head)
            except Exception:
                log.exception("a commit listener of the SQLite store failed")

    def add_commit_listener(self, listener: Callable[[Checkpoint], None]) -> Callable[[], None]:
        """Call ``listener(head)`` after each transaction of this store that stored events.

        ``head`` is the checkpoint of the last event that transaction committed.
        The listener runs on the thread that committed (the writer thread, or an
        event loop's thread with ``writer=auto``) before the appends return, so it
        must be quick, must not block and must not call the store; to wake
        asyncio code, hand over with ``loop.call_soon_threadsafe``. Exceptions are
        logged. Commits made by other processes are not seen: a follower of the
        log still polls, and uses this only to wake up early. Returns a function
        that removes the listener.
        """
        if not callable(listener):
            raise InvalidInput(f"a commit listener is callable, got {listener!r}")
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return remove

    # -- the reader threads --------------------------------------------------

    def _reader_main(self) -> None:
        cur: sqlite3.Cursor | None = None
        try:
            while True:
                job = self._rq.get()
                if job is _STOP:
                    return
                if self._closed:
                    self._fail_closed([job])
                    continue
                if cur is None:
                    try:
                        cur = self._connect_reader()
                    except sqlite3.Error as exc:
                        _post(job[4], [(job[3], False, self._map_error(exc))])
                        continue
                self._run_read(cur, job)
        finally:
            if cur is not None:
                cur.connection.close()

    def _connect_reader(self) -> sqlite3.Cursor:
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only = ON")  # a reader that writes is a bug: fail loudly
        except BaseException:
            conn.close()
            raise
        return conn.cursor()

    def _run_read(self, cur: sqlite3.Cursor, job: _Job) -> None:
        _, fn, args, fut, loop = job
        if fut.cancelled():
            return
        try:
            outcome: _Outcome = (fut, True, fn(cur, *args))
        except sqlite3.Error as exc:
            outcome = (fut, False, self._map_error(exc))
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            outcome = (fut, False, exc)
        finally:
            if cur.connection.in_transaction:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    log.warning("ending a read transaction failed", exc_info=True)
        self._resolve(loop, [outcome])

    # -- submitting ------------------------------------------------------------

    def _submit(
        self,
        q: queue.SimpleQueue[_Job | None],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        write: bool,
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:  # nothing may enter a queue after close() put STOP in it
            if self._closed:
                raise StoreClosed(f"this sqlite store ({self.path}) is closed")
            q.put((write, fn, args, fut, loop))
        return fut

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._opened:
            await self.open()
        return await self._submit(self._rq, fn, args, write=False)

    async def _on_writer(self, fn: Callable[[sqlite3.Cursor], Any]) -> Any:
        """Run ``fn(cursor)`` on the writer's connection, outside any transaction (tests, tools)."""
        if not self._opened:
            await self.open()
        return await self._submit(self._wq, fn, (), write=False)

    # -- the EventStore API --------------------------------------------------

    async def _append(
        self, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        # check_stream_id (EventStore.append) has refused ids SQLite cannot store.
        if not self._opened:
            await self.open()
        if self.writer == "thread":
            result: AppendResult = await self._submit(
                self._wq, self._write_append, (stream_id, events, expected), write=True
            )
            return result
        # writer=auto: join the group this loop commits once its ready tasks have run.
        loop = asyncio.get_running_loop()
        group = self._pending.get(loop)
        if group is None and not getattr(loop, "_ready", True):
            # Nothing else is ready to run on this loop, so no other append could
            # join a group: commit this one alone, now, if that is quick.
            done = self._append_alone(loop, stream_id, events, expected)
            if done is not None:
                return done
        fut = loop.create_future()
        job: _Job = (True, self._write_append, (stream_id, events, expected), fut, loop)
        if group is not None:
            group.append(job)
        else:
            self._pending[loop] = [job]
            loop.call_soon(self._commit_group, loop)
        return cast("AppendResult", await fut)

    def _append_alone(
        self,
        loop: asyncio.AbstractEventLoop,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
    ) -> AppendResult | None:
        """One append in a transaction of its own, on this thread; None: take the general path.

        The general path (a group) is taken when commits are slow, the writer
        thread is busy, another process holds the write lock, or the append
        conflicts (the group path tells an idempotent retry from a conflict).
        """
        if (
            self._commit_us >= _INLINE_COMMIT_US
            or not self._wq.empty()
            or not self._wlock.acquire(blocking=False)
        ):
            return None
        try:
            cur = self._inline_writer_cursor()
            if cur is None:
                return None
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY:
                    return None
                raise self._map_error(exc) from exc
            try:
                self._now_us = time.time_ns() // 1000
                result = self._write_append(cur, stream_id, events, expected)
                self._commit(cur, inline=True)
            except _Conflict:
                cur.execute("ROLLBACK")
                return None
            except BaseException as exc:
                if cur.connection.in_transaction:
                    cur.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._map_error(exc) from exc
                raise
        finally:
            self._wlock.release()
        self._committed_alone(loop, result, len(events))
        return result

    def _committed_alone(self, loop: asyncio.AbstractEventLoop, result: AppendResult, events: int) -> None:
        """Count an append committed alone on ``loop``'s thread and tell who listens."""
        stats = self.stats
        stats.appends += 1
        stats.events += events
        stats.largest_batch = stats.largest_batch or 1
        if self._wait_loop is loop:
            self._wake_waiters()
            self._notify(result.checkpoint, announce=False)
        elif self._wait_loop is not None or self._listeners:
            self._notify(result.checkpoint)

    def _inline_writer_cursor(self) -> sqlite3.Cursor | None:
        """The write connection's cursor, set never to wait for other processes; None once closed.

        Call holding ``_wlock``.
        """
        cur = self._wcur
        if cur is None or self._closed:
            return None
        if self._wait_locks:  # an event loop's thread never sleeps on another process's lock
            cur.execute("PRAGMA busy_timeout = 0")
            self._wait_locks = False
        return cur

    def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the appends this loop gathered: here if that is quick, else on the writer thread."""
        jobs = [job for job in self._pending.pop(loop) if not job[3].cancelled()]
        if not jobs:
            return
        if (
            self._commit_us < _INLINE_COMMIT_US
            and not self._closed
            and self._wq.empty()
            and self._wlock.acquire(blocking=False)
        ):
            try:
                cur = self._inline_writer_cursor()
                if cur is not None and self._commit_batch(cur.connection, cur, jobs, inline=True):
                    return
            finally:
                self._wlock.release()
        with self._lock:  # nothing may enter the queue after close() put STOP in it
            if not self._closed:
                for job in jobs:
                    self._wq.put(job)
                return
        self._fail_closed(jobs)

    async def _read_stream(  # noqa: PLR0913, PLR0917 - the signature EventStore defines
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]:
        _check_text("a stream id", stream_id)
        if from_version > _MAX_INT:
            return []
        upper = _MAX_INT if to_version is None else min(to_version, _MAX_INT)
        count = -1 if limit is None else min(limit, _MAX_INT)
        if as_of_us is None:
            sql = _SQL_STREAM_BACK if backwards else _SQL_STREAM_FWD
            params: tuple[Any, ...] = (stream_id, from_version, upper, count)
        else:
            sql = _SQL_STREAM_AS_OF_BACK if backwards else _SQL_STREAM_AS_OF_FWD
            params = (stream_id, from_version, upper, count, max(min(as_of_us, _MAX_INT), -_MAX_INT))
        if as_of_us is None and self._inline_ok():
            head = _INLINE_ROWS if count < 0 else min(count, _INLINE_ROWS)
            first = self._run_inline(self._read_stream_sync, stream_id, sql, (*params[:3], head))
            if first is not _NOT_INLINE:
                if len(first) < head or head == count:
                    return cast("list[RecordedEvent]", first)
                # A long stream: the rest comes from a reader thread.
                last = first[-1].stream_version
                rest_from, rest_upper = (from_version, last - 1) if backwards else (last + 1, upper)
                rest_count = -1 if count < 0 else count - head
                rest = await self._read(
                    self._read_stream_sync, stream_id, sql, (stream_id, rest_from, rest_upper, rest_count)
                )
                return [*first, *rest]
        rows: list[RecordedEvent] = await self._read(self._read_stream_sync, stream_id, sql, params)
        return rows

    def _read_stream_sync(
        self, cur: sqlite3.Cursor, stream_id: str, sql: str, params: tuple[Any, ...]
    ) -> list[RecordedEvent]:
        codec = self.codec
        return [
            RecordedEvent(codec, r[0], stream_id, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
            for r in cur.execute(sql, params)
        ]

    async def _stream_version(self, stream_id: str) -> int:
        _check_text("a stream id", stream_id)
        version = self._run_inline(self._stream_version_sync, stream_id) if self._inline_ok() else _NOT_INLINE
        if version is _NOT_INLINE:
            version = await self._read(self._stream_version_sync, stream_id)
        return cast("int", version)

    @staticmethod
    def _stream_version_sync(cur: sqlite3.Cursor, stream_id: str) -> int:
        return int(cur.execute(_SQL_VERSION, (stream_id,)).fetchone()[0] or 0)

    async def _read_all(self, after: Checkpoint, limit: int, event_types: tuple[str, ...] | None) -> LogPage:
        if event_types is not None:
            for t in event_types:
                _check_text("an event type", t, InvalidInput)
        if after.position > _MAX_INT:  # past any position SQLite can hold
            return LogPage([], Checkpoint(0, after.position))
        page: LogPage = await self._read(self._read_all_sync, after.position, limit, event_types)
        return page

    def _read_all_sync(
        self, cur: sqlite3.Cursor, after: int, limit: int, event_types: tuple[str, ...] | None
    ) -> LogPage:
        if event_types is None:
            rows = cur.execute(_SQL_LOG, (after, limit)).fetchall()
            if len(rows) == limit:
                checkpoint = Checkpoint(0, rows[-1][0])
            else:
                # The page reached the head; it is the last row's position (the
                # same statement saw everything after `after`), or `after` itself.
                checkpoint = Checkpoint(0, max(after, rows[-1][0] if rows else 0))
        else:
            types = ", ".join("?" * len(event_types))
            sql = (
                f"SELECT {_LOG_COLUMNS} FROM events WHERE position > ? "  # noqa: S608 - placeholders only
                f"AND event_type IN ({types}) ORDER BY position LIMIT ?"
            )
            # One read transaction for the page and the head: the checkpoint
            # must move past filtered-out events, but never past an event this
            # snapshot did not see.
            cur.execute("BEGIN")
            rows = cur.execute(sql, (after, *event_types, limit)).fetchall()
            if len(rows) == limit:
                checkpoint = Checkpoint(0, rows[-1][0])
            else:
                head = cur.execute(_SQL_HEAD).fetchone()[0] or 0
                checkpoint = Checkpoint(0, max(after, head))
            cur.execute("COMMIT")
        codec = self.codec
        events = [
            RecordedEvent(codec, r[1], r[2], r[3], r[0], r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows
        ]
        return LogPage(events, checkpoint)

    async def _head(self) -> Checkpoint:
        position = self._run_inline(self._head_sync) if self._inline_ok() else _NOT_INLINE
        if position is _NOT_INLINE:
            position = await self._read(self._head_sync)
        return Checkpoint(0, cast("int", position)) if position else START

    @staticmethod
    def _head_sync(cur: sqlite3.Cursor) -> int:
        return int(cur.execute(_SQL_HEAD).fetchone()[0] or 0)

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        _check_text("a stream id", snapshot.stream_id)
        if snapshot.stream_version > _MAX_INT or snapshot.schema_version > _MAX_INT:
            raise InvalidInput("a snapshot's stream_version and schema_version must be below 2**63 on SQLite")
        if not isinstance(snapshot.created_at, datetime) or snapshot.created_at.utcoffset() is None:
            raise InvalidInput(f"a snapshot's created_at must be timezone-aware, got {snapshot.created_at!r}")
        row = (
            snapshot.stream_id,
            snapshot.schema_version,
            snapshot.stream_version,
            snapshot.state,
            datetime_to_micros(snapshot.created_at),
        )
        if not self._opened:
            await self.open()
        await self._submit(self._wq, self._write_snapshot, (row,), write=True)

    async def _load_snapshot(self, stream_id: str, schema_version: int) -> Snapshot | None:
        _check_text("a stream id", stream_id)
        if schema_version > _MAX_INT:
            return None
        row: Any = (
            self._run_inline(self._load_snapshot_sync, stream_id, schema_version)
            if self._inline_ok()
            else _NOT_INLINE
        )
        if row is _NOT_INLINE:
            row = await self._read(self._load_snapshot_sync, stream_id, schema_version)
        if row is None:
            return None
        stream_version, state, created_us = row
        return Snapshot(stream_id, stream_version, schema_version, state, micros_to_datetime(created_us))

    @staticmethod
    def _load_snapshot_sync(cur: sqlite3.Cursor, stream_id: str, schema_version: int) -> Any:
        return cur.execute(_SQL_LOAD_SNAPSHOT, (stream_id, schema_version)).fetchone()

    async def _snapshot_and_stream(
        self, stream_id: str, schema_version: int, to_version: int | None
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        # Both in one read (the base class makes two): on this thread when the
        # events after the snapshot are few, else on a reader thread.
        _check_text("a stream id", stream_id)
        upper = _MAX_INT if to_version is None else min(to_version, _MAX_INT)
        schema = min(schema_version, _MAX_INT)  # no snapshot is stored past 2**63 - 1
        found: Any = (
            self._run_inline(self._snapshot_and_stream_sync, stream_id, schema, upper, _INLINE_ROWS)
            if self._inline_ok()
            else _NOT_INLINE
        )
        if found is _NOT_INLINE or len(found[1]) == _INLINE_ROWS:
            found = await self._read(self._snapshot_and_stream_sync, stream_id, schema, upper, -1)
        row, events = found
        if row is None or schema != schema_version:
            return None, events
        version, state, created_us = row
        return Snapshot(stream_id, version, schema_version, state, micros_to_datetime(created_us)), events

    def _snapshot_and_stream_sync(
        self, cur: sqlite3.Cursor, stream_id: str, schema_version: int, upper: int, limit: int
    ) -> tuple[Any, list[RecordedEvent]]:
        row = cur.execute(_SQL_LOAD_SNAPSHOT, (stream_id, schema_version)).fetchone()
        if row is not None and row[0] > upper:
            row = None  # past the version asked for: replay from the start instead
        start = 1 if row is None else row[0] + 1
        if upper < start:
            return row, []
        return row, self._read_stream_sync(cur, stream_id, _SQL_STREAM_FWD, (stream_id, start, upper, limit))

    # -- small reads on the caller's thread ---------------------------------------

    def _inline_ok(self) -> bool:
        # With readers=0 (and :memory:) every read shares the writer's connection.
        return self._opened and self.readers > 0

    def _run_inline(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(cursor, *args)`` on this thread's own read connection; _NOT_INLINE if it is busy.

        A short read costs less than the trip to a reader thread and back (two
        thread wake-ups and a write to the event loop's self-pipe: about 100 us
        here, three times the read), so reads that are small by construction run
        here: a stream's first rows, a version, the head, a snapshot. WAL lets
        the read proceed while the writer works. The connection never waits for
        a lock (busy timeout 0): if SQLite answers busy, the caller takes the
        reader thread instead, so this thread (an event loop) never sleeps.
        """
        entry: tuple[sqlite3.Cursor, threading.Lock] | None = getattr(self._inline, "entry", None)
        if entry is None:
            entry = self._open_inline()
            if entry is None:
                return _NOT_INLINE
        cur, lock = entry
        with lock:
            if self._closed:
                raise StoreClosed(f"this sqlite store ({self.path}) is closed")
            try:
                return fn(cur, *args)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
                    return _NOT_INLINE
                raise self._map_error(exc) from exc
            except sqlite3.Error as exc:
                raise self._map_error(exc) from exc
            finally:
                if cur.connection.in_transaction:
                    cur.execute("ROLLBACK")

    def _open_inline(self) -> tuple[sqlite3.Cursor, threading.Lock] | None:
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            return None  # the reader threads will report what is wrong
        entry = (conn.cursor(), threading.Lock())
        with self._lock:
            if self._closed:
                conn.close()
                raise StoreClosed(f"this sqlite store ({self.path}) is closed")
            self._inline_cursors.append(entry)
        self._inline.entry = entry
        return entry

    def __repr__(self) -> str:
        return f"<SQLiteEventStore {self.path}{' closed' if self._closed else ''}>"
