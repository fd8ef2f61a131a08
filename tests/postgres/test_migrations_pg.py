"""The one migration mechanism on PostgreSQL only: a store schema from before it is adopted.

A schema made by the code before decision 0034 keeps the store's versions in
``schema_migrations``: ``legacy_store_schema`` makes one as that code did. What
the mechanism does on both databases (from empty, from each version, refusals,
all or nothing, racing migrators, the bookkeeping from before) is written once
in tests/test_migrations.py and runs there on PostgreSQL too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql

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
