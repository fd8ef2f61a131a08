"""The one migration mechanism (eventvault.store.migrations), written once and run on SQLite and PostgreSQL.

Components of toy tables show the mechanism: migrating from empty and from
each version, refusing a newer one, all or nothing, adopting a database from
before, two migrators racing. Then the store and the projections' bookkeeping
on it, from databases as the code before the mechanism left them. Each test
takes ``db``: a SQLite file of its own, or a PostgreSQL schema of its own on the
suite's server. (PostgreSQL's ``schema_migrations`` adoption, which SQLite never
had, is in tests/postgres/test_migrations_pg.py.)
"""

from __future__ import annotations

import abc
import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from eventvault import NO_STREAM, EventRegistry, SchemaVersionError, create_store, event
from eventvault.projections import BOOKKEEPING, open_read_models
from eventvault.store import Component, Migration
from eventvault.store.migrations import Target, lock_key, migrate, stored_versions
from eventvault.store.postgres import SCHEMA_VERSION as POSTGRES_VERSION
from eventvault.store.sqlite import SCHEMA_VERSION as SQLITE_VERSION

reg = EventRegistry()


@event("migrations_test.Noted", registry=reg)
@dataclass(frozen=True, slots=True)
class Noted:
    text: str


WAIT = 60.0  # seconds a migrator waits for the other in the race: a deadline, never reached when all is well


class Db(abc.ABC):
    """A database of one test, and what the tests must say differently on each backend."""

    dialect: str
    store_version: int
    failure: type[Exception]
    """What a step that names a missing table raises."""

    @abc.abstractmethod
    def connect(self, *, impatient: bool = False) -> Any:
        """A new autocommit connection (closed after the test); ``impatient``: it never waits for a lock."""

    @abc.abstractmethod
    def target(self, conn: Any, where: str = "the test database") -> Target: ...

    @abc.abstractmethod
    def fresh(self) -> Db:
        """Another empty database of this test."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL stores and read models open the database by."""

    @abc.abstractmethod
    def holding_the_lock(self, conn: Any) -> contextlib.AbstractContextManager[None]:
        """Hold the migration lock on ``conn`` meanwhile."""

    @abc.abstractmethod
    def asks_for_the_lock(self, statement: str) -> bool: ...

    @abc.abstractmethod
    def ensure_exists(self, conn: Any) -> None:
        """Make the (empty) database that tables can be created in by hand, as the code of before did."""

    @abc.abstractmethod
    def tables(self, conn: Any) -> set[str]: ...

    @abc.abstractmethod
    def indexes(self, conn: Any) -> set[str]: ...

    @abc.abstractmethod
    def idle(self, conn: Any) -> bool: ...


class SQLiteDb(Db):
    dialect = "sqlite"
    store_version = SQLITE_VERSION
    failure = sqlite3.OperationalError

    def __init__(self, path: Path, closing: contextlib.ExitStack) -> None:
        self.path = path
        self._closing = closing

    def connect(self, *, impatient: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=0 if impatient else WAIT, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode = WAL")
        return self._closing.enter_context(contextlib.closing(conn))

    def target(self, conn: Any, where: str = "the test database") -> Target:
        return Target(conn, "sqlite", where)

    def fresh(self) -> SQLiteDb:
        return SQLiteDb(self.path.with_name(f"{uuid.uuid4().hex[:8]}.db"), self._closing)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    @contextlib.contextmanager
    def holding_the_lock(self, conn: Any) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")

    def asks_for_the_lock(self, statement: str) -> bool:
        return statement == "BEGIN IMMEDIATE"

    def ensure_exists(self, conn: Any) -> None:
        del conn  # a SQLite file exists once connected

    def tables(self, conn: Any) -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def indexes(self, conn: Any) -> set[str]:
        return {
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        }

    def idle(self, conn: Any) -> bool:
        return not conn.in_transaction


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


class PostgresDb(Db):
    dialect = "postgresql"
    store_version = POSTGRES_VERSION
    failure = psycopg.errors.UndefinedTable

    def __init__(self, server_url: str, closing: contextlib.ExitStack) -> None:
        self.server_url = server_url
        self.schema = f"evt_mig_{uuid.uuid4().hex[:12]}"
        self._closing = closing
        closing.callback(self._drop)

    def _drop(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def connect(self, *, impatient: bool = False) -> psycopg.Connection[Any]:
        conn = self._closing.enter_context(psycopg.connect(self.server_url, autocommit=True))
        # The toy components' tables are unqualified: they go in the test's schema.
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if impatient:
            conn.execute("SET lock_timeout = '1ms'")  # an advisory lock's wait is a lock wait too
        return conn

    def target(self, conn: Any, where: str = "the test database") -> Target:
        return Target(conn, "postgresql", where, schema=self.schema)

    def fresh(self) -> PostgresDb:
        return PostgresDb(self.server_url, self._closing)

    @property
    def url(self) -> str:
        return _with_schema(self.server_url, self.schema)

    @contextlib.contextmanager
    def holding_the_lock(self, conn: Any) -> Iterator[None]:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(self.schema)])
            yield
        finally:
            conn.execute("ROLLBACK")

    def asks_for_the_lock(self, statement: str) -> bool:
        return "pg_advisory_xact_lock" in statement

    def ensure_exists(self, conn: Any) -> None:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))

    def tables(self, conn: Any) -> set[str]:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [self.schema])
        return {r[0] for r in rows}

    def indexes(self, conn: Any) -> set[str]:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", [self.schema])
        return {r[0] for r in rows}

    def idle(self, conn: Any) -> bool:
        return bool(conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A SQLite file of this test, or a PostgreSQL schema of its own (dropped after it)."""
    with contextlib.ExitStack() as closing:
        if request.param == "sqlite":
            yield SQLiteDb(tmp_path / "m.db", closing)
        else:
            server = request.getfixturevalue("postgres_server")  # skips, or fails in CI, without a server
            yield PostgresDb(str(server.url), closing)


def add_tag_if_missing(target: Target) -> None:
    if "tag" not in target.columns("notes"):
        target.execute("ALTER TABLE notes ADD COLUMN tag TEXT")


NOTES_MIGRATIONS = (
    Migration(1, "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",)),
    Migration(2, "notes.tag, by a callable", (add_tag_if_missing,)),
    Migration(3, "notes by tag", ("CREATE INDEX notes_by_tag ON notes (tag)",)),
)


def notes(upto: int = len(NOTES_MIGRATIONS)) -> Component:
    return Component("notes", NOTES_MIGRATIONS[:upto])


def rows(conn: Any, query: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(query).fetchall()]


# -- the mechanism ------------------------------------------------------------------------------


def test_an_empty_database_gets_every_migration_and_one_version_row(db):
    """From nothing: the tables of every migration, and the component's row at its last version."""
    conn = db.connect()
    target = db.target(conn)
    assert stored_versions(target) == {}
    assert migrate(target, [notes()]) == {"notes": 3}
    assert target.columns("notes") == {"id", "text", "tag"}
    assert "notes_by_tag" in db.indexes(conn)
    assert rows(conn, "SELECT component, version FROM eventvault_schema") == [("notes", 3)]
    assert db.idle(conn)


@pytest.mark.parametrize("version", range(1, len(NOTES_MIGRATIONS) + 1))
def test_each_older_version_gets_only_what_it_misses_and_keeps_its_rows(db, version):
    """A database at version v (by the code of then) gets migrations v+1 on; its rows stay."""
    conn = db.connect()
    target = db.target(conn)
    migrate(target, [notes(version)])
    conn.execute("INSERT INTO notes (id, text) VALUES (1, 'kept')")
    assert stored_versions(target) == {"notes": version}
    assert migrate(target, [notes()]) == {"notes": 3}
    assert stored_versions(target) == {"notes": 3}
    assert rows(conn, "SELECT id, text FROM notes") == [(1, "kept")]
    assert target.columns("notes") == {"id", "text", "tag"}


def test_an_up_to_date_database_is_seen_without_the_lock(db):
    """Every component current: migrate only reads, and does not wait for another holder of the lock."""
    migrate(db.target(db.connect()), [notes()])
    with db.holding_the_lock(db.connect()):
        assert migrate(db.target(db.connect(impatient=True)), [notes()]) == {"notes": 3}
        # The impatient connection does give up on the lock: the check above is not vacuous.
        with pytest.raises(Exception, match=r"lock|locked"):
            migrate(db.target(db.connect(impatient=True)), [notes(), Component("more", ())])


def test_a_newer_version_is_refused_and_nothing_changes(db):
    """A component recorded above its list raises SchemaVersionError naming both; no component moves."""
    conn = db.connect()
    migrate(db.target(conn), [notes()])
    other = Component("other", (Migration(1, "t", ("CREATE TABLE other_t (x INTEGER)",)),))
    with pytest.raises(SchemaVersionError) as info:
        migrate(db.target(conn, "the test file"), [other, notes(2)])
    assert str(info.value) == (
        "the test file has 'notes' schema version 3, newer than the 2 this code knows: "
        "upgrade eventvault to open it"
    )
    assert stored_versions(db.target(conn)) == {"notes": 3}
    assert "other_t" not in db.tables(conn)
    assert db.idle(conn)


def test_a_failing_migration_leaves_the_database_as_it_was(db):
    """A step that fails rolls back its migration, the ones before it and the version row."""
    conn = db.connect()
    target = db.target(conn)
    migrate(target, [notes(1)])
    broken = Component(
        "notes", (*NOTES_MIGRATIONS, Migration(4, "broken", ("ALTER TABLE nowhere ADD COLUMN x INTEGER",)))
    )
    with pytest.raises(db.failure, match="nowhere"):
        migrate(target, [broken])
    assert stored_versions(target) == {"notes": 1}
    assert target.columns("notes") == {"id", "text"}
    assert "notes_by_tag" not in db.indexes(conn)
    assert db.idle(conn)


def test_adopt_tells_the_version_of_a_database_from_before_the_mechanism(db):
    """With no row, ``adopt`` gives the version an older bookkeeping recorded: nothing already there runs."""

    def adopt(target: Target) -> int:
        if not target.exists("old_versions"):
            return 0
        return int(target.execute(f"SELECT max(version) FROM {target.table('old_versions')}").fetchone()[0])  # noqa: S608

    adopted = Component("notes", NOTES_MIGRATIONS, adopt=adopt)
    conn = db.connect()
    db.ensure_exists(conn)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, tag TEXT)")
    conn.execute("CREATE TABLE old_versions (version INTEGER)")
    conn.execute("INSERT INTO old_versions VALUES (2)")
    assert migrate(db.target(conn), [adopted]) == {"notes": 3}
    assert stored_versions(db.target(conn)) == {"notes": 3}
    assert "notes_by_tag" in db.indexes(conn)
    # At its last version already: nothing runs (no notes table is made), the row is written all the same.
    other = db.fresh()
    fresh = other.connect()
    other.ensure_exists(fresh)
    fresh.execute("CREATE TABLE old_versions (version INTEGER)")
    fresh.execute("INSERT INTO old_versions VALUES (3)")
    assert migrate(other.target(fresh), [adopted]) == {"notes": 3}
    assert stored_versions(other.target(fresh)) == {"notes": 3}
    assert "notes" not in other.tables(fresh)


def test_migrations_are_numbered_from_one_in_order():
    """A list that skips or repeats a number is refused when the component is made (a merge that collided)."""
    with pytest.raises(ValueError, match=r"numbered 1, 2, 3 \.\.\. in order: \[1, 3\]"):
        Component("x", (NOTES_MIGRATIONS[0], NOTES_MIGRATIONS[2]))
    with pytest.raises(ValueError, match=r"\[1, 2, 2\]"):
        Component("x", (*NOTES_MIGRATIONS[:2], Migration(2, "again", ())))


class Announcing:
    """A connection that tells when it asks for the migration lock, then asks."""

    def __init__(self, conn: Any, asked: threading.Event, asks: Callable[[str], bool]) -> None:
        self.conn = conn
        self.asked = asked
        self.asks = asks

    def execute(self, statement: str, *params: Sequence[Any]) -> Any:
        if self.asks(statement):
            self.asked.set()
        return self.conn.execute(statement, *params)


def test_two_migrators_racing_apply_each_migration_once(db):
    """Two connections migrating one new database at once: every migration runs once.

    The one holding the lock waits in its first migration until the other has
    asked for the lock too; the other then waits, reads the versions again and
    finds the work done.
    """
    asked = [threading.Event(), threading.Event()]

    def both_asked(target: Target) -> None:
        for flag in asked:
            assert flag.wait(WAIT), "the other migrator never asked for the lock"
        target.execute("INSERT INTO runs VALUES (1)")

    racing = Component(
        "racing",
        (
            Migration(1, "runs", ("CREATE TABLE runs (migration INTEGER PRIMARY KEY)", both_asked)),
            Migration(2, "more", ("INSERT INTO runs VALUES (2)",)),
        ),
    )
    conns = [db.connect() for _ in asked]
    base = [db.target(c) for c in conns]
    announced = [
        Target(Announcing(t.conn, a, db.asks_for_the_lock), t.dialect, t.where, schema=t.schema)
        for t, a in zip(base, asked, strict=True)
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda t: migrate(t, [racing]), announced))
    assert results == [{"racing": 2}, {"racing": 2}]
    assert rows(conns[0], "SELECT migration FROM runs ORDER BY 1") == [(1,), (2,)]
    assert stored_versions(base[0]) == {"racing": 2}


# -- the store and the bookkeeping on it ---------------------------------------------------------------


async def test_the_store_and_the_bookkeeping_share_one_version_table(db):
    """A store with read models beside it: one eventvault_schema, a row per component."""
    async with create_store(db.url, registry=reg) as store:
        await store.append("s", [Noted("a")], expected_version=NO_STREAM)
    rm = open_read_models(db.url)
    try:
        rm.setup()
        assert rm.schema_versions() == {"store": db.store_version, "projections": BOOKKEEPING.version}
        rm.setup()  # again: nothing to do
        assert rm.schema_versions() == {"store": db.store_version, "projections": BOOKKEEPING.version}
    finally:
        rm.close()
    assert rows(db.connect(), "SELECT component FROM eventvault_schema ORDER BY 1") == [
        ("projections",),
        ("store",),
    ]


# The bookkeeping tables as the code before the mechanism made them (the same
# SQL on both databases): first as first released (the columns added since
# missing), then as the last code did.
_FIRST_BOOKKEEPING = (
    """CREATE TABLE ev_projection (name TEXT PRIMARY KEY, generation BIGINT NOT NULL,
        version INTEGER NOT NULL, partitions INTEGER NOT NULL)""",
    """CREATE TABLE ev_partition (name TEXT NOT NULL, generation BIGINT NOT NULL, part INTEGER NOT NULL,
        cp_tx BIGINT NOT NULL DEFAULT 0, cp_pos BIGINT NOT NULL DEFAULT 0, applied BIGINT NOT NULL DEFAULT 0,
        owner TEXT, token BIGINT NOT NULL DEFAULT 0, expires DOUBLE PRECISION NOT NULL DEFAULT 0, error TEXT,
        error_at DOUBLE PRECISION, error_tx BIGINT, error_pos BIGINT, error_event TEXT,
        PRIMARY KEY (name, generation, part))""",
    """CREATE TABLE ev_worker (worker TEXT NOT NULL, name TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (worker, name))""",
)
_LAST_BOOKKEEPING = (
    *_FIRST_BOOKKEEPING,
    "ALTER TABLE ev_partition ADD COLUMN error_type TEXT",
    "ALTER TABLE ev_partition ADD COLUMN error_stream TEXT",
    "ALTER TABLE ev_projection ADD COLUMN paused INTEGER NOT NULL DEFAULT 0",
)


@pytest.mark.parametrize("made", [_FIRST_BOOKKEEPING, _LAST_BOOKKEEPING], ids=["first release", "last code"])
async def test_bookkeeping_from_before_the_mechanism_gets_what_it_misses_and_keeps_its_rows(db, made):
    """Tables without a version row, beside a store: version 1 adds the missing columns; the rows stay."""
    async with create_store(db.url, registry=reg):
        pass  # the store's schema (on PostgreSQL, the schema itself) is there first, as it was
    conn = db.connect()
    for statement in made:
        conn.execute(statement)
    conn.execute("INSERT INTO ev_projection (name, generation, version, partitions) VALUES ('p', 2, 1, 1)")
    conn.execute(
        "INSERT INTO ev_partition (name, generation, part, cp_pos, applied) VALUES ('p', 2, 0, 7, 7)"
    )
    rm = open_read_models(db.url)
    try:
        rm.setup()
        assert rm.schema_versions() == {"store": db.store_version, "projections": BOOKKEEPING.version}
    finally:
        rm.close()
    assert {"error_type", "error_stream"} <= db.target(conn).columns("ev_partition")
    assert rows(conn, "SELECT name, generation, paused FROM ev_projection") == [("p", 2, 0)]
    assert rows(conn, "SELECT cp_pos, applied, error_type, error_stream FROM ev_partition") == [
        (7, 7, None, None)
    ]


def test_bookkeeping_of_newer_code_is_refused(db):
    """Read models whose bookkeeping is at a version this code does not know raise SchemaVersionError."""
    rm = open_read_models(db.url)
    try:
        rm.setup()
        db.connect().execute("UPDATE eventvault_schema SET version = 9 WHERE component = 'projections'")
        with pytest.raises(
            SchemaVersionError, match="projection bookkeeping schema version 9, newer than the 1"
        ):
            rm.setup()
    finally:
        rm.close()
