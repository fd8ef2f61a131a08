"""The one migration mechanism (eventvault.store.migrations) on SQLite, and what moved onto it.

Components of toy tables show the mechanism: migrating from empty and from
each version, refusing a newer one, all or nothing, two migrators racing.
Then the store, the projections' bookkeeping and their shared version table,
from files as the code before the mechanism left them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventvault import NO_STREAM, EventRegistry, SchemaVersionError, create_store, event
from eventvault.projections import BOOKKEEPING, open_read_models
from eventvault.store import Component, Migration
from eventvault.store.migrations import Target, migrate, stored_versions
from eventvault.store.sqlite import SCHEMA_VERSION

reg = EventRegistry()


@event("migrations_test.Noted", registry=reg)
@dataclass(frozen=True, slots=True)
class Noted:
    text: str


WAIT = 60.0  # seconds a thread waits for the other in the race: a deadline, never reached when all is well


def connect(path: Path, *, busy_timeout: float = WAIT) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "m.db"


@pytest.fixture
def conn(db: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(connect(db)) as c:
        yield c


def on(conn: Any, where: str = "test file") -> Target:
    return Target(conn, "sqlite", where)


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


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def indexes(conn: sqlite3.Connection) -> set[str]:
    return {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    }


# -- the mechanism ------------------------------------------------------------------------------


def test_an_empty_database_gets_every_migration_and_one_version_row(conn):
    """From nothing: the tables of every migration, and the component's row at its last version."""
    assert stored_versions(on(conn)) == {}
    assert migrate(on(conn), [notes()]) == {"notes": 3}
    assert columns(conn, "notes") == {"id", "text", "tag"}
    assert "notes_by_tag" in indexes(conn)
    assert conn.execute("SELECT component, version FROM eventvault_schema").fetchall() == [("notes", 3)]
    assert not conn.in_transaction


@pytest.mark.parametrize("version", range(1, len(NOTES_MIGRATIONS) + 1))
def test_each_older_version_gets_only_what_it_misses_and_keeps_its_rows(conn, version):
    """A database at version v (by the code of then) gets migrations v+1 on; its rows stay."""
    migrate(on(conn), [notes(version)])
    conn.execute("INSERT INTO notes (id, text) VALUES (1, 'kept')")
    assert stored_versions(on(conn)) == {"notes": version}
    assert migrate(on(conn), [notes()]) == {"notes": 3}
    assert stored_versions(on(conn)) == {"notes": 3}
    assert conn.execute("SELECT id, text FROM notes").fetchall() == [(1, "kept")]
    assert columns(conn, "notes") == {"id", "text", "tag"}


def test_an_up_to_date_database_is_seen_without_the_lock(db, conn):
    """Every component current: migrate reads, and does not wait for another connection's write."""
    migrate(on(conn), [notes()])
    with contextlib.closing(connect(db)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        with contextlib.closing(connect(db, busy_timeout=0)) as impatient:
            assert migrate(on(impatient), [notes()]) == {"notes": 3}
        writer.execute("ROLLBACK")


def test_a_newer_version_is_refused_and_nothing_changes(conn):
    """A component recorded above its list raises SchemaVersionError naming both; no component moves."""
    migrate(on(conn), [notes()])
    other = Component("other", (Migration(1, "t", ("CREATE TABLE other_t (x)",)),))
    with pytest.raises(SchemaVersionError) as info:
        migrate(on(conn, "the test file"), [other, notes(2)])
    assert str(info.value) == (
        "the test file has 'notes' schema version 3, newer than the 2 this code knows: "
        "upgrade eventvault to open it"
    )
    assert stored_versions(on(conn)) == {"notes": 3}
    assert "other_t" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert not conn.in_transaction


def test_a_failing_migration_leaves_the_database_as_it_was(conn):
    """A step that fails rolls back its migration, the ones before it and the version row."""
    migrate(on(conn), [notes(1)])
    broken = Component(
        "notes", (*NOTES_MIGRATIONS, Migration(4, "broken", ("ALTER TABLE nowhere ADD COLUMN x",)))
    )
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(on(conn), [broken])
    assert stored_versions(on(conn)) == {"notes": 1}
    assert columns(conn, "notes") == {"id", "text"}
    assert not conn.in_transaction


def test_adopt_tells_the_version_of_a_database_from_before_the_mechanism(conn):
    """With no row, ``adopt`` gives the version an older bookkeeping recorded: nothing already there runs."""
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, tag TEXT)")
    conn.execute("CREATE TABLE old_versions (version INTEGER)")
    conn.execute("INSERT INTO old_versions VALUES (2)")

    def adopt(target: Target) -> int:
        if not target.exists("old_versions"):
            return 0
        return int(target.execute("SELECT max(version) FROM old_versions").fetchone()[0])

    adopted = Component("notes", NOTES_MIGRATIONS, adopt=adopt)
    assert migrate(on(conn), [adopted]) == {"notes": 3}
    assert stored_versions(on(conn)) == {"notes": 3}
    assert "notes_by_tag" in indexes(conn)
    # At its last version already: the row is written all the same.
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as fresh:
        fresh.execute("CREATE TABLE old_versions (version INTEGER)")
        fresh.execute("INSERT INTO old_versions VALUES (3)")
        assert migrate(on(fresh), [adopted]) == {"notes": 3}
        assert stored_versions(on(fresh)) == {"notes": 3}
        assert "notes" not in {r[0] for r in fresh.execute("SELECT name FROM sqlite_master")}


def test_migrations_are_numbered_from_one_in_order():
    """A list that skips or repeats a number is refused when the component is made (a merge that collided)."""
    with pytest.raises(ValueError, match=r"numbered 1, 2, 3 \.\.\. in order: \[1, 3\]"):
        Component("x", (NOTES_MIGRATIONS[0], NOTES_MIGRATIONS[2]))
    with pytest.raises(ValueError, match=r"\[1, 2, 2\]"):
        Component("x", (*NOTES_MIGRATIONS[:2], Migration(2, "again", ())))


class Announcing:
    """A connection that tells when it asks for the migration lock, then asks."""

    def __init__(self, conn: sqlite3.Connection, asked: threading.Event) -> None:
        self.conn = conn
        self.asked = asked

    def execute(self, sql: str, *params: Sequence[Any]) -> Any:
        if sql == "BEGIN IMMEDIATE":
            self.asked.set()
        return self.conn.execute(sql, *params)


def test_two_migrators_racing_apply_each_migration_once(db):
    """Two connections migrating one new file at once: every migration runs once.

    The one holding the lock waits in its first migration until the other has
    asked for the lock too; the other then finds the work done.
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
    conns = [connect(db) for _ in asked]
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(
                    lambda i: migrate(Target(Announcing(conns[i], asked[i]), "sqlite", "f"), [racing]), (0, 1)
                )
            )
        assert results == [{"racing": 2}, {"racing": 2}]
        assert conns[0].execute("SELECT migration FROM runs ORDER BY 1").fetchall() == [(1,), (2,)]
        assert stored_versions(on(conns[0])) == {"racing": 2}
    finally:
        for c in conns:
            c.close()


# -- the store and the bookkeeping on it ---------------------------------------------------------------


async def test_the_store_and_the_bookkeeping_share_one_version_table(db):
    """A store file with read models beside it: one eventvault_schema, a row per component."""
    async with create_store(f"sqlite:///{db}", registry=reg) as store:
        await store.append("s", [Noted("a")], expected_version=NO_STREAM)
    rm = open_read_models(f"sqlite:///{db}")
    try:
        rm.setup()
        assert rm.schema_versions() == {"store": SCHEMA_VERSION, "projections": BOOKKEEPING.version}
        rm.setup()  # again: nothing to do
        assert rm.schema_versions() == {"store": SCHEMA_VERSION, "projections": BOOKKEEPING.version}
    finally:
        rm.close()


# The bookkeeping tables as the code before the mechanism made them: first as
# first released (the columns added since missing), then as the last code did.
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
def test_bookkeeping_from_before_the_mechanism_gets_what_it_misses_and_keeps_its_rows(conn, db, made):
    """Tables without a version row: version 1 adds the missing columns; checkpoints and the rest stay."""
    for statement in made:
        conn.execute(statement)
    conn.execute("INSERT INTO ev_projection (name, generation, version, partitions) VALUES ('p', 2, 1, 1)")
    conn.execute(
        "INSERT INTO ev_partition (name, generation, part, cp_pos, applied) VALUES ('p', 2, 0, 7, 7)"
    )
    rm = open_read_models(f"sqlite:///{db}")
    try:
        rm.setup()
        assert rm.schema_versions() == {"projections": 1}
    finally:
        rm.close()
    assert {"error_type", "error_stream"} <= columns(conn, "ev_partition")
    assert conn.execute("SELECT name, generation, paused FROM ev_projection").fetchall() == [("p", 2, 0)]
    assert conn.execute("SELECT cp_pos, applied, error_type FROM ev_partition").fetchall() == [(7, 7, None)]


def test_bookkeeping_of_newer_code_is_refused(db, conn):
    """Read models whose bookkeeping is at a version this code does not know raise SchemaVersionError."""
    rm = open_read_models(f"sqlite:///{db}")
    try:
        rm.setup()
        conn.execute("UPDATE eventvault_schema SET version = 9 WHERE component = 'projections'")
        with pytest.raises(
            SchemaVersionError, match="projection bookkeeping schema version 9, newer than the 1"
        ):
            rm.setup()
    finally:
        rm.close()
