"""The SQL database that holds read models and projection bookkeeping.

Projections write through plain DB-API connections (``sqlite3``, or psycopg's
synchronous API) on worker threads: handlers are ordinary functions that run
SQL, and the same handler code serves SQLite and PostgreSQL. SQL is written
with ``?`` placeholders; on PostgreSQL they become ``%s``.

Only a ``?`` that stands in the SQL itself is a placeholder: one inside a string
literal (``'...'``, ``E'...'``, ``$$...$$``), a quoted identifier or a comment is
left as it is. PostgreSQL's jsonb operators ``?``, ``?|`` and ``?&`` are written
with the question mark doubled, ``??``, ``??|`` and ``??&`` (``data ?? 'key'``):
a single ``?`` is always a placeholder, since ``? || x`` and ``?|`` cannot be told
apart otherwise. (SQLite has no such operators: there ``??`` is not valid SQL.)
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from eventvault.errors import InvalidInput, InvalidStoreURL, StorageFull, StoreError, StoreUnavailable
from eventvault.projections._wakeups import ProgressListener
from eventvault.store import migrations
from eventvault.store.migrations import Component, Migration
from eventvault.store.sqlite import filelock

if TYPE_CHECKING:
    from eventvault.store.base import EventStore

__all__ = ["BOOKKEEPING", "Connection", "ReadModels", "open_read_models", "read_models_for"]


class Connection(Protocol):
    """The DB-API subset read models use."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...


T = TypeVar("T")

_TABLES: Final = (
    # One row per projection: the generation queries see (a rebuild makes a new one).
    # paused: set by an operator's pause; no worker holds the serving generation's partitions.
    """CREATE TABLE IF NOT EXISTS ev_projection (
        name        TEXT PRIMARY KEY,
        generation  BIGINT NOT NULL,
        version     INTEGER NOT NULL,
        partitions  INTEGER NOT NULL,
        paused      INTEGER NOT NULL DEFAULT 0
    )""",
    # One row per partition of a generation: its checkpoint, its lease and its
    # failure. The lease token is bumped by every takeover and checked by every
    # checkpoint write (the fencing token), in the transaction of the batch.
    """CREATE TABLE IF NOT EXISTS ev_partition (
        name        TEXT NOT NULL,
        generation  BIGINT NOT NULL,
        part        INTEGER NOT NULL,
        cp_tx       BIGINT NOT NULL DEFAULT 0,
        cp_pos      BIGINT NOT NULL DEFAULT 0,
        applied     BIGINT NOT NULL DEFAULT 0,
        owner       TEXT,
        token       BIGINT NOT NULL DEFAULT 0,
        expires     DOUBLE PRECISION NOT NULL DEFAULT 0,
        error       TEXT,
        error_at    DOUBLE PRECISION,
        error_tx    BIGINT,
        error_pos   BIGINT,
        error_event TEXT,
        error_type  TEXT,
        error_stream TEXT,
        PRIMARY KEY (name, generation, part)
    )""",
    # Workers announce themselves per projection so partitions are shared fairly.
    """CREATE TABLE IF NOT EXISTS ev_worker (
        worker      TEXT NOT NULL,
        name        TEXT NOT NULL,
        expires     DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (worker, name)
    )""",
)

# Columns that joined the tables before their versions were recorded: a database
# made then has the tables (CREATE TABLE IF NOT EXISTS leaves them alone) and
# perhaps not these.
_ADDED_BEFORE_VERSIONS: Final = (
    ("ev_partition", "error_type", "TEXT"),
    ("ev_partition", "error_stream", "TEXT"),
    ("ev_projection", "paused", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_missing_columns(target: migrations.Target) -> None:
    for table, column, kind in _ADDED_BEFORE_VERSIONS:
        if column not in target.columns(table):
            target.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


BOOKKEEPING: Final = Component(
    "projections",
    (
        # Version 1 is the tables as they were when versions began to be kept
        # (docs/decisions/0034): a database that has them from before gets what
        # it misses, and its rows stay. From here on: append Migration(2, ...).
        Migration(1, "ev_projection, ev_partition, ev_worker", (*_TABLES, _add_missing_columns)),
    ),
    what="projection bookkeeping schema",
)
"""The projections' bookkeeping tables: a component of the one migration mechanism."""
_SQLITE_FULL: Final = 13  # the primary result code of "database or disk is full"
# Where a literal, quoted identifier or comment of PostgreSQL SQL begins; placeholders
# are looked for only between them. (A block comment nests, and is scanned by hand.)
_PG_QUOTED: Final = re.compile(
    r"""
      (?<![\w$])[eE]'(?:[^'\\]|\\.|'')*'?           # an escape string: backslashes escape
    | '(?:[^']|'')*'?                                # a string literal ('' is a quote in it)
    | "(?:[^"]|"")*"?                                # a quoted identifier
    | --[^\n]*                                       # a comment to the end of the line
    | (?<![\w$])\$(?P<tag>(?:[A-Za-z_][A-Za-z0-9_]*)?)\$(?:.*?\$(?P=tag)\$|.*)  # dollar quoted
    """,
    re.VERBOSE | re.DOTALL,
)
_SCHEMA_NAME = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,62}")


def _broken(error: StoreError) -> bool:
    """Whether the connection that raised ``error`` is worth dropping (a full disk leaves it sound)."""
    return isinstance(error, StoreUnavailable) and not isinstance(error, StorageFull)


class ReadModels:
    """A read-model database: connections for projection workers and for queries.

    Use :func:`open_read_models` with the event store's URL (read models live
    beside the log by default) or another database's.
    """

    dialect: str = ""
    #: SQL for "now" in seconds since the epoch, on the database's clock.
    now_sql: str = ""
    #: Whether every commit waits for the disk (else only ``transaction(durable=True)``).
    durable: bool = False

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        # Connections are closed only while no thread uses one: every transaction
        # and query counts itself in, close() waits for the count to drop to zero
        # and holds new uses back until it is done (a sqlite3 connection closed
        # under a statement running on another thread crashes the process).
        self._idle = threading.Condition(self._lock)
        self._uses = 0
        self._closing = False
        self._depth = threading.local()  # this thread's uses in progress (nested ones pass)
        self._sql_cache: dict[str, str] = {}

    # Subclasses connect, map errors and begin write transactions.
    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def map_error(self, exc: BaseException) -> StoreError:
        """The eventvault error for a driver exception."""
        raise NotImplementedError

    def limit_idle(self, conn: Any, seconds: float) -> None:
        """Have the database end the transaction open on ``conn`` if it sits idle ``seconds`` or more.

        For a transaction that holds locks others may wait for, and whose holder
        may stop in the middle of it (SIGSTOP, a frozen machine, a lost network):
        PostgreSQL ends the session (``idle_in_transaction_session_timeout``, for
        this transaction only), which rolls it back and frees its locks; the
        holder's next statement fails. SQLite does nothing: a stopped writer
        holds the file's write lock, and no other writer gets in until it runs again.
        """

    def progress_listener(self, on_progress: Callable[[], None]) -> ProgressListener | None:  # noqa: ARG002 - for subclasses
        """What hears :meth:`announce_progress` from other processes (PostgreSQL); None: nothing to hear."""
        return None

    def announce_progress(self, conn: Any) -> None:
        """Have the transaction open on ``conn`` announce, when it commits, that projections moved on.

        For waiters in other processes. SQLite does nothing: they watch the file's data_version.
        """

    def is_driver_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` comes from this database's driver."""
        raise NotImplementedError

    def sql(self, text: str) -> str:
        """``text`` with ``?`` placeholders in this dialect."""
        return text

    def connection(self) -> Any:
        """This thread's connection (made on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
            except Exception as exc:
                if self.is_driver_error(exc):
                    raise self.map_error(exc) from exc
                raise
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def drop_connection(self) -> None:
        """Forget this thread's connection (after it broke)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock, contextlib.suppress(ValueError):
                self._all.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        """Count this thread in as using its connection (close() waits for it)."""
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._idle:
                while self._closing:
                    self._idle.wait()
                self._uses += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                with self._idle:
                    self._uses -= 1
                    if self._uses == 0:
                        self._idle.notify_all()

    def _lost(self, conn: Any) -> bool:  # noqa: ARG002 - a backend with connections overrides it
        """Whether ``conn`` is gone (the server restarted or ended it): worth one fresh try."""
        return False

    def _begin_durable(self, conn: Any) -> None:
        """Begin a write transaction whose commit waits for the disk."""
        raise NotImplementedError

    def _end_durable(self, conn: Any) -> None:
        """After that transaction ended: back to commits that do not wait."""

    def _fresh_on_loss(self, first: Callable[[Any], T]) -> T:
        """``first(conn)`` on this thread's connection; once more on a new one if that one was dead.

        Only for a first round trip, where nothing has happened yet: a pooled
        connection that died while idle (the server restarted) costs a retry,
        never an error.
        """
        conn = self.connection()
        try:
            return first(conn)
        except Exception as exc:
            if not (self.is_driver_error(exc) and self._lost(conn)):
                raise
            self.drop_connection()
            return first(self.connection())

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[Any]:
        """A write transaction on this thread's connection: commit, or roll back on error.

        With ``durable`` the commit waits for the disk even when these read
        models do not (``durable=False`` at construction): for rows that must
        survive a crash of the database, such as an answer about to be sent.
        """
        wait = durable and not self.durable
        with self._in_use(), contextlib.ExitStack() as turn:
            conn: Any = None
            try:
                turn.enter_context(self._write_turn())  # given back after COMMIT or ROLLBACK
                conn = self._fresh_on_loss(self._begun_durable if wait else self._begun)
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                mapped = self._mapped(exc)
                if mapped is not None:
                    raise mapped from exc
                raise
            finally:
                if wait and conn is not None:
                    with contextlib.suppress(Exception):
                        self._end_durable(conn)

    def _write_turn(self) -> contextlib.AbstractContextManager[object]:
        """Held around each write transaction: the database's turn among this process's writers."""
        return contextlib.nullcontext()

    def _begun(self, conn: Any) -> Any:
        self._begin(conn)
        return conn

    def _begun_durable(self, conn: Any) -> Any:
        self._begin_durable(conn)
        return conn

    def execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run ``sql`` (``?`` placeholders) on ``conn``; returns the cursor."""
        return conn.execute(self.sql(sql), params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, in a transaction of its own."""
        try:
            with self._in_use():
                # Autocommit on both drivers: the query is a transaction of its own.
                rows = self._fresh_on_loss(lambda conn: list(conn.execute(self.sql(sql), params).fetchall()))
        except Exception as exc:
            mapped = self._mapped(exc)
            if mapped is not None:
                raise mapped from exc
            raise
        return rows

    def _mapped(self, exc: BaseException) -> StoreError | None:
        """The eventvault error for a driver error (None for any other); drops a broken connection."""
        if not self.is_driver_error(exc):
            return None
        mapped = self.map_error(exc)
        if _broken(mapped):
            self.drop_connection()
        return mapped

    def setup(self) -> None:
        """Create (or bring up to date) the bookkeeping tables. Idempotent."""
        self.migrate(BOOKKEEPING)

    def migrate(self, *components: Component) -> dict[str, int]:
        """Bring ``components`` (tables kept in this database) up to date; their versions now.

        The one migration mechanism (:mod:`eventvault.store.migrations`), on
        this thread's connection: safe from many processes at once, and
        SchemaVersionError if the database holds a newer version of one.
        """
        return self._blocking(lambda conn: migrations.migrate(self._migration_target(conn), components))

    def schema_versions(self) -> dict[str, int]:
        """The version of every component this database records (``eventvault_schema``)."""
        return self._blocking(lambda conn: migrations.stored_versions(self._migration_target(conn)))

    def _migration_target(self, conn: Any) -> migrations.Target:
        raise NotImplementedError

    def _blocking(self, work: Callable[[Any], T]) -> T:
        """``work(conn)`` on this thread's connection (it runs its own transactions), errors mapped."""
        try:
            with self._in_use():
                return self._fresh_on_loss(work)
        except Exception as exc:
            mapped = self._mapped(exc)
            if mapped is not None:
                raise mapped from exc
            raise

    def close(self) -> None:
        """Close every connection this object made, once no thread is using one.

        Transactions and queries in progress on other threads finish first; those
        that start meanwhile wait for the close, then open new connections (so a
        runner can be started again). The owner of a read-model database closes
        it after stopping everything that uses it, so that nothing reopens it.
        """
        with self._idle:
            while self._closing:  # another close is at work: this one waits for it
                self._idle.wait()
            self._closing = True
            try:
                while self._uses:
                    self._idle.wait()
                conns, self._all = self._all, []
                self._local = threading.local()
                # Under the lock, so no use starts before every connection is closed.
                for conn in conns:
                    with contextlib.suppress(Exception):
                        conn.close()
            finally:
                self._closing = False
                self._idle.notify_all()


class SQLiteReadModels(ReadModels):
    """Read models in a SQLite file (by default the event store's own)."""

    dialect = "sqlite"
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: str, *, busy_timeout: float = 5.0, durable: bool = False) -> None:
        super().__init__()
        self.path = path
        self.busy_timeout = busy_timeout
        self.durable = durable
        self._turn = filelock.write_turn(path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # Not durable: a commit is atomic and visible at once but does not wait for
        # the disk (WAL, synchronous=NORMAL); the next durable commit in the file,
        # such as the store's next append, carries it to the disk.
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
        # Overwrite what an UPDATE or DELETE frees (an erased owner name must not stay
        # readable in the page; most builds default to this, some do not).
        conn.execute("PRAGMA secure_delete = ON")
        return conn

    @contextlib.contextmanager
    def _write_turn(self) -> Iterator[object]:
        # The store's writer of this process takes the same turn (filelock): each
        # gets the file the moment the other commits, instead of sleeping in
        # SQLite's busy handler.
        filelock.take(self._turn, self.busy_timeout)
        try:
            yield self._turn
        finally:
            self._turn.release()

    def _begin(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: take the write lock now, so a batch never fails half-way
        # on a lock upgrade (SQLITE_BUSY in the middle of a deferred transaction).
        conn.execute("BEGIN IMMEDIATE")

    def _begin_durable(self, conn: sqlite3.Connection) -> None:
        # The setting applies to the connection's next commits (and may not change
        # inside a transaction): FULL syncs the WAL at the commit, and with it all
        # that was written to it before.
        conn.execute("PRAGMA synchronous = FULL")
        self._begin(conn)

    def _end_durable(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA synchronous = NORMAL")

    def is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def _migration_target(self, conn: Any) -> migrations.Target:
        return migrations.Target(conn, "sqlite", f"SQLite database {self.path} (read models)")

    def map_error(self, exc: BaseException) -> StoreError:
        text = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
            return StorageFull(f"read models at {self.path}: the disk is full ({text}); nothing was written")
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in text or "busy" in text or "unable to open" in text
        ):
            return StoreUnavailable(f"read models at {self.path}: {text}")
        return StoreError(f"read models at {self.path}: {text}")


class PostgresReadModels(ReadModels):
    """Read models in a PostgreSQL schema (by default the event store's own)."""

    dialect = "postgresql"
    now_sql = "extract(epoch from clock_timestamp())::float8"

    def __init__(self, conninfo: str, *, schema: str = "eventvault", durable: bool = False) -> None:
        super().__init__()
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            # It is spliced into SQL as an identifier: only plain names get there.
            raise InvalidInput(
                f"a read-model schema is lower case letters, digits and '_' (not pg_...), got {schema!r}"
            )
        self.conninfo = conninfo
        self.schema = schema
        self.durable = durable
        self.progress_channel = f"eventvault.progress.{schema}"[:63]

    def sql(self, text: str) -> str:
        cached = self._sql_cache.get(text)
        if cached is None:
            cached = self._sql_cache[text] = postgres_placeholders(text)
        return cached

    def _connect(self) -> Any:
        import psycopg  # noqa: PLC0415 - only PostgreSQL users need psycopg

        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        try:
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
            if exists is None:
                # Two processes creating it at once: IF NOT EXISTS can still fail
                # with a unique violation in the loser; the schema is there then.
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(f'SET search_path TO "{self.schema}"')
            if not self.durable:
                # A commit is atomic and visible at once, and does not wait for its
                # WAL flush (a crash of the server may lose the last ones).
                conn.execute("SET synchronous_commit = off")
        except BaseException:
            conn.close()
            raise
        return conn

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def _begin_durable(self, conn: Any) -> None:
        self._begin(conn)
        conn.execute("SET LOCAL synchronous_commit = on")  # this transaction only

    def progress_listener(self, on_progress: Callable[[], None]) -> ProgressListener | None:
        return ProgressListener(self.conninfo, self.progress_channel, on_progress)

    def announce_progress(self, conn: Any) -> None:
        # Sent at commit, so a listener never hears of a batch before it is visible.
        # A NOTIFY takes a database-wide lock for its commit; a batch is many
        # events at most a few times per wake-up, so that costs little (the store
        # sends its per-append notifications outside the append for this reason).
        conn.execute("SELECT pg_notify(%s, '')", (self.progress_channel,))

    def limit_idle(self, conn: Any, seconds: float) -> None:
        ms = max(1, math.ceil(seconds * 1000))
        conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {ms}")  # this transaction only

    def _lost(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def _migration_target(self, conn: Any) -> migrations.Target:
        return migrations.Target(
            conn, "postgresql", f"PostgreSQL read models in schema {self.schema}", schema=self.schema
        )

    def is_driver_error(self, exc: BaseException) -> bool:
        import psycopg  # noqa: PLC0415

        return isinstance(exc, psycopg.Error)

    def map_error(self, exc: BaseException) -> StoreError:
        import psycopg  # noqa: PLC0415

        if isinstance(exc, psycopg.errors.DiskFull):
            return StorageFull(f"read models in schema {self.schema}: the database's disk is full ({exc})")
        if isinstance(exc, psycopg.OperationalError | psycopg.errors.IdleInTransactionSessionTimeout):
            # The second is no OperationalError to psycopg (SQLSTATE class 25), but the
            # server ended the session (see limit_idle): the connection is gone too.
            return StoreUnavailable(f"read models in schema {self.schema}: {exc}")
        return StoreError(f"read models in schema {self.schema}: {exc}")


def postgres_placeholders(text: str) -> str:
    """``text`` (SQL with ``?`` placeholders) as psycopg takes it: ``%s`` placeholders, ``%`` doubled.

    A ``?`` in a literal, a quoted identifier or a comment stays; ``??`` is one
    ``?`` (the jsonb operators ``??``, ``??|``, ``??&``). An unterminated literal
    or comment runs to the end, as PostgreSQL reads it (and refuses it).
    """
    out: list[str] = []
    at = 0
    while at < len(text):
        start = _next_quoted(text, at)
        out.append(_bare_placeholders(text[at:start]))
        if start == len(text):
            break
        end = _end_of_quoted(text, start)
        out.append(text[start:end].replace("%", "%%"))
        at = end
    return "".join(out)


def _next_quoted(text: str, at: int) -> int:
    """Where the next literal, quoted identifier or comment begins (``len(text)``: none)."""
    found = _PG_QUOTED.search(text, at)
    block = text.find("/*", at)
    starts = [i for i in (found.start() if found else -1, block) if i >= 0]
    return min(starts, default=len(text))


def _end_of_quoted(text: str, start: int) -> int:
    if text.startswith("/*", start):  # PostgreSQL's block comments nest
        depth, i = 0, start
        while i < len(text):
            if text.startswith("/*", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("*/", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    return i
            else:
                i += 1
        return len(text)
    found = _PG_QUOTED.match(text, start)
    assert found is not None  # noqa: S101 - _next_quoted found it here
    return found.end()


def _bare_placeholders(sql: str) -> str:
    """SQL outside literals and comments: ``??`` is a ``?``, ``?`` is ``%s``, ``%`` is ``%%``."""
    return "?".join(part.replace("%", "%%").replace("?", "%s") for part in sql.split("??"))


def read_models_for(store: EventStore, *, durable: bool = False) -> ReadModels:
    """The read-model database beside ``store``'s log: the same SQLite file or PostgreSQL schema.

    A SQLite store opened with ``?read_models=FILE`` keeps them in that file
    instead (beside the store's, when relative): the read models' commits then
    never wait for the store's appends, nor the appends for them.

    Read models are derived from the log, so by default their commits do not
    wait for the disk (``durable=False``): each commit is atomic and visible at
    once, and a crash of the machine (or of the PostgreSQL server) can lose
    only the last ones, with the checkpoint they moved, so the projection
    applies those events again. ``durable=True`` makes every commit wait.
    """
    if store.scheme == "sqlite":
        # The store's own file, or the file its read_models option names.
        path = str(getattr(store, "read_models_path", "") or getattr(store, "path", ""))
        if not path or path == ":memory:":
            raise InvalidInput("read models need a SQLite file: a :memory: store cannot share its database")
        return SQLiteReadModels(path, durable=durable)
    if store.scheme == "postgresql":
        conninfo = getattr(store, "conninfo", None)
        if not isinstance(conninfo, str):
            raise InvalidInput("this PostgreSQL store does not expose its conninfo")
        return PostgresReadModels(
            conninfo, schema=str(getattr(store, "schema", "eventvault")), durable=durable
        )
    raise InvalidInput(
        f"a {store.scheme}:// store has no SQL database for read models: pass read_models="
        "open_read_models('sqlite:///read-models.db')"
    )


def open_read_models(url: str, *, durable: bool = False) -> ReadModels:
    """A read-model database of its own: ``sqlite:///path.db`` or ``postgresql://...?schema=name``.

    ``durable`` as in :func:`read_models_for`.
    """
    if not isinstance(url, str):
        raise InvalidStoreURL(f"a read-model URL is a str, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        path = parts.path.removeprefix("/")
        if not path or path == ":memory:":
            raise InvalidStoreURL(f"{url!r}: read models need a SQLite file that other connections can open")
        return SQLiteReadModels(path, durable=durable)
    if scheme in ("postgresql", "postgres"):
        schema = query.pop("schema", "eventvault")
        conninfo = parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()
        return PostgresReadModels(conninfo, schema=schema, durable=durable)
    raise InvalidStoreURL(f"{url!r}: read models live in sqlite:/// or postgresql:// databases")
