"""The store's own schema (versioned, migrated once, under a lock), its options, and its errors."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventvault import (
    ANY,
    NO_STREAM,
    InvalidStoreURL,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
    StreamDeleted,
    create_store,
)
from eventvault.store.migrations import lock_key
from eventvault.store.postgres import SCHEMA_VERSION, PostgresEventStore
from eventvault.store.postgres._schema import _read_horizon_function


async def rows(
    conn: psycopg.AsyncConnection, query: str, params: list[Any] | None = None
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def test_opening_creates_the_schema_at_the_current_version(store, raw):
    """A new schema gets its tables and the store's row in eventvault_schema."""
    conn = await raw()
    tables = await rows(
        conn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [store.schema]
    )
    assert {t for (t,) in tables} == {
        "eventvault_schema",
        "streams",
        "events",
        "snapshots",
        "event_tags",
        "subject_keys",
    }
    versions = await rows(conn, f"SELECT component, version FROM {store.schema}.eventvault_schema")  # noqa: S608
    assert versions == [("store", SCHEMA_VERSION)]


async def test_reopening_keeps_the_data_and_migrates_nothing(open_store, raw, notes):
    """A second open of the same schema finds it current: the events stay, the version row is unchanged."""
    first = await open_store()
    await first.append("s", notes("kept"), expected_version=NO_STREAM)
    conn = await raw()
    query = f"SELECT component, version, xmin::text FROM {first.schema}.eventvault_schema"  # noqa: S608
    recorded = await rows(conn, query)
    await first.close()
    second = await open_store()
    assert [e.data.text for e in await second.read_stream("s")] == ["kept"]
    assert await rows(conn, query) == recorded


async def test_an_older_schema_is_brought_up_to_date(open_store, raw, notes):
    """A schema migrations behind gets the missing steps on open, and keeps its events."""
    first = await open_store()
    await first.append("s", notes("kept"), expected_version=NO_STREAM)
    await first.close()
    conn = await raw()
    # Make it a version-1 schema again: without what versions 2 to 7 add.
    await conn.execute(
        f"ALTER TABLE {first.schema}.streams DROP COLUMN deleted_version, DROP COLUMN tombstoned, "
        "DROP COLUMN truncate_before, DROP COLUMN max_count, DROP COLUMN max_age_us, "
        "ADD CONSTRAINT streams_version_check CHECK (version > 0)"
    )
    await conn.execute(f"DROP TABLE {first.schema}.subject_keys")
    await conn.execute(f"DROP TABLE {first.schema}.event_tags")
    await conn.execute(f"DROP FUNCTION {first.schema}.dcb_lock(boolean, int8[], boolean[])")
    await conn.execute(f"ALTER TABLE {first.schema}.events DROP COLUMN tags")
    await conn.execute(f"DROP INDEX {first.schema}.events_position")
    await conn.execute(f"DROP INDEX {first.schema}.streams_id_prefix")
    await conn.execute(f"DROP FUNCTION {first.schema}.read_horizon()")
    await conn.execute(f"UPDATE {first.schema}.eventvault_schema SET version = 1")  # noqa: S608
    again = await open_store()
    versions = await rows(conn, f"SELECT component, version FROM {first.schema}.eventvault_schema")  # noqa: S608
    assert versions == [("store", SCHEMA_VERSION)]
    for index in ("events_position", "streams_id_prefix"):
        assert await rows(conn, "SELECT to_regclass(%s) IS NOT NULL", [f"{first.schema}.{index}"]) == [
            (True,)
        ]
    [kept] = await again.read_stream("s")
    assert await again.checkpoint_at(kept.position) == kept.checkpoint
    assert kept.tags == ()
    # Its streams take deletes and retention rules (schema 6) like new ones.
    await again.append("s", notes("more"), expected_version=1)
    await again.truncate_before("s", 2)
    assert [e.stream_version for e in await again.read_stream("s")] == [2]
    assert (await again.scavenge()).events_removed == 1
    await again.delete_stream("s", expected_version=2, tombstone=True)
    with pytest.raises(StreamDeleted):
        await again.append("s", notes("no"), expected_version=ANY)
    assert await rows(conn, "SELECT to_regclass(%s) IS NOT NULL", [f"{first.schema}.subject_keys"]) == [
        (True,)
    ]
    assert again.keys is not None
    key = await again.keys.key_for("s")  # the migrated table takes keys
    assert (await again.keys.keys_of(["s"])) == {"s": key}


async def test_two_stores_opening_at_the_same_moment_migrate_once(open_store, schema, raw, eventually, notes):
    """Two opens racing on a new schema: one migrates, the other waits on the lock and finds it done."""
    gate = await raw()
    await gate.execute("SELECT pg_advisory_lock(%s)", [lock_key(schema)])
    opening = [asyncio.create_task(open_store()) for _ in range(2)]

    async def waiting_on_the_lock() -> int:
        [(n,)] = await rows(gate, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return int(n)

    await eventually(waiting_on_the_lock, lambda n: n >= 2, what="both opens to wait on the migration lock")
    await gate.execute("SELECT pg_advisory_unlock(%s)", [lock_key(schema)])
    a, b = await asyncio.gather(*opening)
    assert await rows(gate, f"SELECT component, version FROM {schema}.eventvault_schema") == [  # noqa: S608
        ("store", SCHEMA_VERSION)
    ]
    await a.append("s", notes("from a"), expected_version=NO_STREAM)
    assert [e.data.text for e in await b.read_stream("s")] == ["from a"]


async def test_a_schema_newer_than_the_code_is_refused(open_store, store, raw, notes):
    """Opening a schema at a version newer than this code raises SchemaVersionError; nothing changes."""
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    conn = await raw()
    newer = SCHEMA_VERSION + 1
    await conn.execute(f"UPDATE {store.schema}.eventvault_schema SET version = %s", [newer])  # noqa: S608
    with pytest.raises(
        SchemaVersionError, match=rf"event store schema version {newer}, newer than the {SCHEMA_VERSION}"
    ):
        await open_store()
    assert await rows(conn, f"SELECT count(*) FROM {store.schema}.events") == [(1,)]  # noqa: S608


async def test_stores_on_different_schemas_share_a_database_without_seeing_each_other(
    open_store, new_schema, notes
):
    """Each schema is a separate store: its own streams, log and positions."""
    left = await open_store(schema=new_schema())
    right = await open_store(schema=new_schema())
    await left.append("s", notes("left"), expected_version=NO_STREAM)
    result = await right.append("s", notes("right"), expected_version=NO_STREAM)
    assert result.positions == (1,)
    assert [e.data.text for e in await left.read_all()] == ["left"]
    assert [e.data.text for e in await right.read_all()] == ["right"]


async def test_a_log_copied_from_another_cluster_is_refused(store, raw):
    """Events with transaction ids ahead of this cluster's counter would break the order: opening refuses."""
    conn = await raw()
    await conn.execute(
        f"INSERT INTO {store.schema}.events (tx_id, event_id, stream_id, stream_version, event_type, "  # noqa: S608
        "schema_version, occurred_us, recorded_us, data, metadata) "
        "VALUES ('999999999999999'::xid8, gen_random_uuid(), 'copied', 1, 'pg.Noted', 1, 0, 0, "
        "'{}'::bytea, '{}'::bytea)"
    )
    again = PostgresEventStore(store._conninfo, schema=store.schema)
    with pytest.raises(StoreError, match="copied from another cluster"):
        await again.open()
    await again.close()


# -- URLs and options -------------------------------------------------------------------


async def test_url_query_parameters_configure_the_store(pg_url, schema, raw, notes, registry):
    """create_store passes schema, pool and libpq options from the URL (postgres:// works too)."""
    url = pg_url.replace("postgresql://", "postgres://", 1)
    app = f"evt-url-{uuid.uuid4().hex[:8]}"
    store = create_store(
        f"{url}?schema={schema}&pool_min=2&pool_max=3&application_name={app}", registry=registry
    )
    assert isinstance(store, PostgresEventStore)
    async with store:
        await store.append("s", notes("a"), expected_version=NO_STREAM)
        conn = await raw()
        names = await rows(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app])
        assert names[0][0] >= 1
        assert store.schema == schema


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"shema": "x"}, r"unknown postgresql:// option\(s\) \['shema'\]", id="unknown option"),
        pytest.param({"replication": "database"}, "unknown", id="replication is not passed through"),
        pytest.param({"schema": "Has-Caps"}, "schema must be a lower-case SQL identifier", id="bad schema"),
        pytest.param({"schema": "pg_mine"}, "schema must be", id="pg_ schema"),
        pytest.param({"schema": "x" * 64}, "schema must be", id="schema too long"),
        pytest.param({"pool_max": "ten"}, "pool_max must be an integer", id="pool_max not a number"),
        pytest.param({"pool_max": 0}, "pool_max must be >= 1", id="pool_max 0"),
        pytest.param({"pool_min": "-1"}, "pool_min must be >= 0", id="negative pool_min"),
        pytest.param({"pool_min": 4, "pool_max": 2}, "must not exceed pool_max", id="min over max"),
        pytest.param({"pool_timeout": "0"}, "pool_timeout must be a finite number", id="zero timeout"),
        pytest.param({"poll_interval": "inf"}, "poll_interval must be a finite", id="infinite poll"),
        pytest.param({"poll_interval": True}, "poll_interval must be a number", id="bool poll"),
        pytest.param({"notify": "maybe"}, "notify must be true or false", id="bad bool"),
        pytest.param({"notify_debounce": "-0.1"}, "notify_debounce must be", id="negative debounce"),
        pytest.param({"append_concurrency": "0"}, "append_concurrency must be >= 1", id="no appends"),
        pytest.param({"sslmode": 1.5}, "libpq option sslmode must be a str", id="bad libpq value"),
    ],
)
def test_bad_options_are_refused(pg_url, options, message):
    """A misspelt option or a bad value raises InvalidStoreURL naming it, before any connection."""
    with pytest.raises(InvalidStoreURL, match=message):
        PostgresEventStore(pg_url, **options)


def test_bad_options_in_a_url_are_refused(pg_url):
    """Options in the URL's query string are checked the same way."""
    with pytest.raises(InvalidStoreURL, match="pool_max must be an integer"):
        create_store(f"{pg_url}?pool_max=lots")


def test_a_malformed_connection_string_is_refused():
    """A conninfo libpq cannot parse raises InvalidStoreURL."""
    with pytest.raises(InvalidStoreURL, match="not a PostgreSQL connection string"):
        PostgresEventStore("host=localhost dbname")


async def test_an_unreachable_server_is_store_unavailable_without_the_password(schema):
    """Opening a store on a closed port raises StoreUnavailable naming the server, never the password."""
    store = PostgresEventStore(
        "postgresql://ada:s3cret@127.0.0.1:1/nowhere", schema=schema, connect_timeout=2
    )
    with pytest.raises(
        StoreUnavailable, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1/nowhere"
    ) as caught:
        await store.open()
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(store)
    await store.close()


async def test_a_broken_schema_is_a_store_error_not_a_driver_error(store, raw, notes):
    """When the tables are gone from under the store, calls raise StoreError with the server's reason."""
    conn = await raw()
    await conn.execute(f"DROP TABLE {store.schema}.events")
    with pytest.raises(StoreError, match=r"\[42P01\].*events") as caught:
        await store.append("s", notes("a"), expected_version=NO_STREAM)
    assert not isinstance(caught.value, StoreUnavailable)
    with pytest.raises(StoreError, match="42P01"):
        await store.read_all()


async def test_a_lock_timeout_is_store_unavailable_and_writes_nothing(open_store, held, notes):
    """An append that gives up waiting for a stream lock raises StoreUnavailable; nothing is written."""
    store = await open_store(options="-c lock_timeout=200")
    await store.append("s", notes("a"), expected_version=NO_STREAM)
    holder = await held(store)
    await holder.append("s", notes("held"), expected_version=1)
    with pytest.raises(StoreUnavailable, match="lock timeout"):
        await store.append("s", notes("b"), expected_version=1)
    await holder.rollback()
    assert [e.data.text for e in await store.read_stream("s")] == ["a"]


async def test_a_schema_7_store_gets_the_read_horizon_of_schema_8(open_store, raw, notes):
    """Opening a store made at schema 7 replaces read_horizon()'s scan of the log with the index probe."""
    first = await open_store()
    await first.append("s", notes("kept"), expected_version=NO_STREAM)
    await first.close()
    conn = await raw()
    s = first.schema
    await conn.execute(_read_horizon_function(sql.Identifier(s), s).as_string(None))  # as schema 3 made it
    await conn.execute(f"UPDATE {s}.eventvault_schema SET version = 7")  # noqa: S608
    source = f"SELECT prosrc FROM pg_proc WHERE oid = '{s}.read_horizon'::regproc"  # noqa: S608
    [(old,)] = await rows(conn, source)
    assert "NOT EXISTS" in old
    again = await open_store()
    [(new,)] = await rows(conn, source)
    assert "max(tx_id)" in new
    assert "NOT EXISTS" not in new
    assert await rows(conn, f"SELECT version FROM {s}.eventvault_schema") == [(SCHEMA_VERSION,)]  # noqa: S608
    [kept] = await again.read_stream("s")
    assert await again.checkpoint_at(kept.position) == kept.checkpoint
