"""The one migration mechanism on PostgreSQL: schemas from before it, racing migrators, refusals.

A schema made by the code before decision 0034 keeps the store's versions in
``schema_migrations`` and its read models' bookkeeping with no version at all:
``legacy_store_schema`` and ``LEGACY_BOOKKEEPING`` make them as that code did.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventvault import SchemaVersionError
from eventvault.projections import BOOKKEEPING, open_read_models
from eventvault.store import Component, Migration
from eventvault.store.migrations import Target, migrate, stored_versions
from eventvault.store.postgres import SCHEMA_VERSION
from eventvault.store.postgres._schema import store_component

WAIT = 60.0  # seconds a racing migrator waits for the other: a deadline, never reached when all is well


@pytest.fixture
def connect(pg_url) -> Iterator[Any]:
    """Opens blocking autocommit connections for the test; closes them after it."""
    conns: list[psycopg.Connection[Any]] = []

    def make() -> psycopg.Connection[Any]:
        conns.append(psycopg.connect(pg_url, autocommit=True))
        return conns[-1]

    yield make
    for conn in conns:
        conn.close()


def one(conn: Any, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    return list(conn.execute(query, params).fetchall())


def legacy_store_schema(conn: Any, schema: str, upto: int) -> None:
    """A schema at version ``upto`` as the store before 0034 left it: schema_migrations, one row a version."""
    s = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(s)
    )
    for m in store_component(schema).migrations[:upto]:
        for step in m.steps:
            assert isinstance(step, str)
            conn.execute(step)
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_migrations (version, description) VALUES (%s, %s)").format(s),
            [m.version, m.description],
        )
    # One event, written by hand in the columns every version has.
    conn.execute(sql.SQL("INSERT INTO {}.streams VALUES ('old', 1)").format(s))
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.events (event_id, stream_id, stream_version, event_type, schema_version, "
            "occurred_us, recorded_us, data, metadata) "
            "VALUES (gen_random_uuid(), 'old', 1, 'pg.Noted', 1, 1, 1, "
            """convert_to('{{"text": "old"}}', 'UTF8'), '{{}}'::bytea)"""
        ).format(s)
    )


@pytest.mark.parametrize("version", [1, SCHEMA_VERSION], ids=["oldest", "current"])
async def test_a_store_schema_from_before_the_mechanism_is_adopted_and_keeps_its_events(
    open_store, connect, schema, version
):
    """A schema_migrations schema at v: opening applies what it misses and records it in eventvault_schema.

    Its history rows stay, with one more that the code before refuses (its
    SchemaVersionError), and its events are read as before.
    """
    conn = connect()
    legacy_store_schema(conn, schema, version)
    store = await open_store()
    [old] = await store.read_stream("old")
    assert old.data.text == "old"
    assert old.tags == ()
    recorded = one(conn, f"SELECT component, version FROM {schema}.eventvault_schema")  # noqa: S608
    assert recorded == [("store", SCHEMA_VERSION)]
    history = one(conn, f"SELECT version, description FROM {schema}.schema_migrations ORDER BY 1")  # noqa: S608
    assert [v for v, _ in history] == [*range(1, version + 1), 2**31 - 1]
    assert "eventvault_schema" in history[-1][1]
    # What the code before 0034 read, and refused above its own version (5).
    assert one(conn, f"SELECT max(version) FROM {schema}.schema_migrations") == [(2**31 - 1,)]  # noqa: S608
    for index in ("events_position", "streams_id_prefix"):
        assert one(conn, "SELECT to_regclass(%s) IS NOT NULL", [f"{schema}.{index}"]) == [(True,)]
    await store.close()
    again = await open_store()  # adopted once: the row is there, schema_migrations is not read again
    assert [e.data.text for e in await again.read_stream("old")] == ["old"]
    assert one(conn, f"SELECT count(*) FROM {schema}.schema_migrations") == [(version + 1,)]  # noqa: S608


# -- the mechanism, on blocking connections ---------------------------------------------------------


NOTES = Component(
    "notes",
    (
        Migration(1, "notes", ("CREATE TABLE notes (id integer PRIMARY KEY, text text NOT NULL)",)),
        Migration(2, "notes.tag", ("ALTER TABLE notes ADD COLUMN tag text",)),
    ),
)


def on(conn: Any, schema: str) -> Target:
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return Target(conn, "postgresql", f"schema {schema}", schema=schema)


def test_from_empty_and_from_each_version_and_a_newer_one_refused(connect, schema):
    """Each version gets what it misses, rows stay; one newer than the list raises SchemaVersionError."""
    conn = connect()
    target = on(conn, schema)
    assert stored_versions(target) == {}  # not even the schema yet
    assert migrate(target, [Component("notes", NOTES.migrations[:1])]) == {"notes": 1}
    conn.execute("INSERT INTO notes VALUES (1, 'kept')")
    assert migrate(target, [NOTES]) == {"notes": 2}
    assert one(conn, "SELECT id, text, tag FROM notes") == [(1, "kept", None)]
    assert migrate(target, [NOTES]) == {"notes": 2}
    conn.execute(f"UPDATE {schema}.eventvault_schema SET version = 3")  # noqa: S608
    with pytest.raises(
        SchemaVersionError, match=rf"schema {schema} has 'notes' schema version 3, newer than the 2"
    ):
        migrate(target, [NOTES])
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_failing_migration_leaves_the_schema_as_it_was(connect, schema):
    """A step that fails rolls back the whole migration, and the versions with it."""
    conn = connect()
    target = on(conn, schema)
    migrate(target, [Component("notes", NOTES.migrations[:1])])
    broken = Component(
        "notes", (*NOTES.migrations, Migration(3, "broken", ("ALTER TABLE nowhere ADD x int",)))
    )
    with pytest.raises(psycopg.errors.UndefinedTable):
        migrate(target, [broken])
    assert stored_versions(target) == {"notes": 1}
    assert one(
        conn,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'tag'",
    ) == [(0,)]


class Announcing:
    """A connection that tells when it asks for the migration lock, then asks."""

    def __init__(self, conn: Any, asked: threading.Event) -> None:
        self.conn = conn
        self.asked = asked

    def execute(self, query: str, *params: Any) -> Any:
        if "pg_advisory_xact_lock" in query:
            self.asked.set()
        return self.conn.execute(query, *params)


def test_two_migrators_racing_apply_each_migration_once(connect, schema):
    """Two connections migrating one new schema at once: each migration runs once.

    The one holding the lock waits in its first migration until the other has
    asked for the lock; the other then waits, reads the versions again and
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
            Migration(1, "runs", ("CREATE TABLE runs (migration integer PRIMARY KEY)", both_asked)),
            Migration(2, "more", ("INSERT INTO runs VALUES (2)",)),
        ),
    )
    targets = [on(connect(), schema) for _ in asked]
    announced = [
        Target(Announcing(t.conn, a), "postgresql", t.where, schema=schema)
        for t, a in zip(targets, asked, strict=True)
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda t: migrate(t, [racing]), announced))
    assert results == [{"racing": 2}, {"racing": 2}]
    assert one(targets[0].conn, "SELECT migration FROM runs ORDER BY 1") == [(1,), (2,)]
    assert stored_versions(targets[0]) == {"racing": 2}


# -- read models' bookkeeping ------------------------------------------------------------------


LEGACY_BOOKKEEPING = (
    # As first released: ev_partition without error_type and error_stream, ev_projection without paused.
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


async def test_bookkeeping_from_before_the_mechanism_shares_the_store_schemas_version_table(
    open_store, connect, pg_url, schema
):
    """Read models beside a store, from before: missing columns added, rows kept, one version table.

    The schema's eventvault_schema holds both components.
    """
    store = await open_store()
    conn = connect()
    on(conn, schema)
    for statement in LEGACY_BOOKKEEPING:
        conn.execute(statement)
    conn.execute("INSERT INTO ev_projection VALUES ('p', 2, 1, 1)")
    conn.execute(
        "INSERT INTO ev_partition (name, generation, part, cp_pos, applied) VALUES ('p', 2, 0, 7, 7)"
    )
    rm = open_read_models(f"{pg_url}?schema={store.schema}")
    try:
        rm.setup()
        assert rm.schema_versions() == {"store": SCHEMA_VERSION, "projections": BOOKKEEPING.version}
    finally:
        rm.close()
    assert one(conn, "SELECT name, generation, paused FROM ev_projection") == [("p", 2, 0)]
    assert one(conn, "SELECT cp_pos, applied, error_type, error_stream FROM ev_partition") == [
        (7, 7, None, None)
    ]
    with contextlib.suppress(Exception):
        await store.close()
