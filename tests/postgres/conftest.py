"""PostgreSQL test setup: give each test its own schema, clean up.

The server is the run's own (see tests/conftest.py: a private cluster, or
``EVENTVAULT_TEST_POSTGRES_URL``); the tests need a superuser, to terminate
backends and create databases. Without a server these tests are skipped,
loudly; with ``EVENTVAULT_REQUIRE_POSTGRES=1`` (CI) a missing server fails them.

Tests import nothing from here (pytest runs with ``--import-mode=importlib``):
the event types and helpers reach them as fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from eventvault import ANY, EventRegistry, NewEvent, event
from eventvault.store.postgres import PostgresEventStore
from eventvault.store.records import START, AppendResult, Checkpoint, ExpectedVersion
from eventvault.testing import eventually_async

T = TypeVar("T")

_HERE = Path(__file__).parent


def postgres_url() -> str:
    """The test server's URL (set by the ``postgres_server`` fixture before any test here runs)."""
    return os.environ["EVENTVAULT_TEST_POSTGRES_URL"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory needs the server: mark it ``postgres``."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session", autouse=True)
def _postgres_server(postgres_server) -> None:
    """Skip (locally) or fail (EVENTVAULT_REQUIRE_POSTGRES=1) when the server is not there."""


# -- event types -----------------------------------------------------------------------

REGISTRY = EventRegistry()


@event("pg.Noted", registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Noted:
    """The event type most of these tests append."""

    text: str


@event("pg.Flagged", registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Flagged:
    """A second type, for event_types filters."""

    text: str


@pytest.fixture
def registry() -> EventRegistry:
    """The registry of pg.Noted and pg.Flagged."""
    return REGISTRY


@pytest.fixture
def notes() -> Callable[..., list[NewEvent]]:
    """``notes("a", "b")``: one pg.Noted per text, each with its own event id."""
    return lambda *texts: [NewEvent(Noted(t)) for t in texts]


@pytest.fixture
def flags() -> Callable[..., list[NewEvent]]:
    """``flags("a")``: one pg.Flagged per text."""
    return lambda *texts: [NewEvent(Flagged(t)) for t in texts]


# -- waiting on the database -------------------------------------------------------------


@pytest.fixture
def eventually():
    """Polls the database until a probe's result is done (``within`` seconds at most), or fails.

    Only for waiting on the server itself (a backend to block on a lock, the
    server to come back); the test's own tasks coordinate with asyncio events.
    """
    return eventually_async


# -- schemas, stores, connections ----------------------------------------------------------


def drop_schema(name: str) -> None:
    """Drop a test schema and everything in it."""
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def new_schema():
    """Makes unique schema names for this test, all dropped after it."""
    made: list[str] = []

    def make() -> str:
        made.append(f"evt_test_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    for name in made:
        drop_schema(name)


@pytest.fixture
def schema(new_schema: Callable[[], str]) -> str:
    """A schema of this test's own (dropped after it)."""
    return new_schema()


@pytest.fixture
def database(pg_url):
    """A database of this test's own on the server, dropped (connections and all) after it."""
    name = f"evt_test_db_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The test server's URL."""
    return str(postgres_server.url)


@pytest.fixture
async def open_store(schema):
    """Opens stores on this test's schema (or as told by options); closes them after the test."""
    stores: list[PostgresEventStore] = []

    async def make(url: str | None = None, **options: Any) -> PostgresEventStore:
        options.setdefault("schema", schema)
        options.setdefault("pool_max", 5)
        options.setdefault("registry", REGISTRY)
        store = PostgresEventStore(url or postgres_url(), **options)
        stores.append(store)
        return await store.open()

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(open_store: Callable[..., Awaitable[PostgresEventStore]]) -> PostgresEventStore:
    """An open store on this test's schema, polling often so that waits stay short."""
    return await open_store(poll_interval=0.05)


@pytest.fixture
async def raw():
    """Opens plain psycopg connections (autocommit) for the test; closes them after it."""
    conns: list[psycopg.AsyncConnection] = []

    async def connect(url: str | None = None) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(url or postgres_url(), autocommit=True)
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        await conn.close()


class HeldAppend:
    """An append inside a transaction the test keeps open, then commits or rolls back.

    It runs the store's own append statement (``append_on``) on a connection of
    its own, so its rows are exactly what a normal append writes.
    """

    def __init__(self, store: PostgresEventStore, conn: psycopg.AsyncConnection) -> None:
        self.store = store
        self.conn = conn
        self.tx: int | None = None
        self.result: AppendResult | None = None

    async def begin(self, *, take_xid: bool = True) -> HeldAppend:
        """Start the transaction; with ``take_xid`` it gets its transaction id at once."""
        await self.conn.execute("BEGIN")
        if take_xid:
            # An event writer takes the writers' lock before it has an id.
            await self.store.declare_writer(self.conn)
            cur = await self.conn.execute("SELECT pg_current_xact_id()::text")
            row = await cur.fetchone()
            assert row is not None
            self.tx = int(row[0])
        return self

    async def append(
        self, stream_id: str, events: list[NewEvent], expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        """Append inside the held transaction (nobody sees it before the commit)."""
        self.result = await self.store.append_on(
            self.conn, stream_id, self.store.prepare(events), expected_version
        )
        self.tx = self.result.checkpoint.tx
        return self.result

    async def commit(self) -> None:
        """Commit the held transaction."""
        await self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        """Roll the held transaction back."""
        await self.conn.execute("ROLLBACK")

    @property
    def pid(self) -> int:
        """The server process of the held transaction."""
        return self.conn.info.backend_pid


@pytest.fixture
def held(raw, store):
    """Begins HeldAppends, each on a connection of its own (on the ``store`` fixture unless told)."""

    async def make(on: PostgresEventStore | None = None, *, take_xid: bool = True) -> HeldAppend:
        return await HeldAppend(on or store, await raw()).begin(take_xid=take_xid)

    return make


@pytest.fixture
def start_waiting(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Awaitable[asyncio.Task[bool]]]:
    """A 60-second wait_for_events (after START, or `after`) started once it has looked at the head.

    From then on only a wake-up or the poll can end the wait early: an append
    made later cannot be found by the first look. Tests give it far less time
    than 60 seconds, so running into its timeout (and a last look) fails them.
    """

    async def start(store: PostgresEventStore, after: Checkpoint = START) -> asyncio.Task[bool]:
        looked = asyncio.Event()
        head = store.head

        async def head_then_tell() -> Checkpoint:
            result = await head()
            looked.set()
            return result

        monkeypatch.setattr(store, "head", head_then_tell)
        task = asyncio.create_task(store.wait_for_events(after, timeout=60))
        await looked.wait()
        return task

    return start


# -- other programs on the same cluster -----------------------------------------------------


async def _someone_elses_table(conn: psycopg.AsyncConnection, schema: str) -> sql.Composed:
    table = sql.Identifier(schema, "someone_elses_table")
    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    await conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (x int)").format(table))
    return sql.SQL("INSERT INTO {} VALUES (1)").format(table)


@pytest.fixture
def unrelated_transaction(raw, pg_url, database, new_schema):
    """Opens a write transaction that writes no events (it holds a transaction id), open until the test ends.

    ``"another database"`` writes a table in another database of the cluster;
    ``"same database"`` a table of its own beside the stores' schemas. Returns
    the connection and the transaction's id.
    """

    async def hold(where: str) -> tuple[psycopg.AsyncConnection, int]:
        url = make_conninfo(pg_url, dbname=database) if where == "another database" else pg_url
        conn = await raw(url)
        insert = await _someone_elses_table(conn, new_schema())
        await conn.execute("BEGIN")
        await conn.execute(insert)
        cur = await conn.execute("SELECT pg_current_xact_id()::text")
        row = await cur.fetchone()
        assert row is not None
        return conn, int(row[0])

    return hold


@pytest.fixture
def busy_cluster(unrelated_transaction, raw, pg_url, database, new_schema):
    """Other programs writing to the cluster, for as long as the block using it runs.

    A long write transaction stays open in another database and in the same
    database (on tables that are not the store's), and short write transactions
    commit one after another in both places, until the block ends.
    """

    @contextlib.asynccontextmanager
    async def busy():
        stop = asyncio.Event()
        commits = [0]

        async def churn(url: str) -> None:
            conn = await raw(url)
            insert = await _someone_elses_table(conn, new_schema())
            while not stop.is_set():
                async with conn.transaction():
                    await conn.execute(insert)
                commits[0] += 1

        places = [make_conninfo(pg_url, dbname=database), pg_url]
        for where in ("another database", "same database"):
            await unrelated_transaction(where)
        tasks = [asyncio.create_task(churn(url)) for url in places]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert commits[0] > 0, "the other programs never committed anything"

    return busy
