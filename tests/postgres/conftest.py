"""PostgreSQL test setup: find the server, give each test its own schema, clean up.

The server is ``EVENTVAULT_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``; the tests need a superuser, to
terminate backends and create databases). Without a server these tests are
skipped, loudly (a banner at the end of the run); with
``EVENTVAULT_REQUIRE_POSTGRES=1`` (CI) a missing server fails every one of them.

Tests import nothing from here (pytest runs with ``--import-mode=importlib``):
the event types and helpers reach them as fixtures.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from eventvault import ANY, EventRegistry, NewEvent, event
from eventvault.store.postgres import PostgresEventStore
from eventvault.store.records import START, AppendResult, Checkpoint, ExpectedVersion

T = TypeVar("T")

_HERE = Path(__file__).parent
_REQUIRED = os.environ.get("EVENTVAULT_REQUIRE_POSTGRES") == "1"
_problem: list[str] = []  # why the server is unusable ("" if it is fine), once looked at


def postgres_url() -> str:
    """The server the tests use."""
    return os.environ.get("EVENTVAULT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# -- the server: there, skipped loudly, or fatal in CI ----------------------------------


def _server_problem() -> str | None:
    """None if the test server answers, else why not (looked up once per run)."""
    if not _problem:
        try:
            with psycopg.connect(postgres_url(), connect_timeout=3) as conn:
                version = conn.info.server_version
            _problem.append("" if version >= 130000 else f"PostgreSQL {version} is older than 13 (no xid8)")
        except psycopg.Error as exc:
            _problem.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
    return _problem[0] or None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory needs the server: mark it ``postgres``."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session", autouse=True)
def _postgres_server() -> None:
    """Skip (locally) or fail (EVENTVAULT_REQUIRE_POSTGRES=1) when the server is not there."""
    problem = _server_problem()
    if problem is None:
        return
    where = postgres_url()
    if _REQUIRED:
        pytest.fail(
            f"EVENTVAULT_REQUIRE_POSTGRES=1 but PostgreSQL at {where} is unusable: {problem}",
            pytrace=False,
        )
    pytest.skip(f"NO POSTGRESQL at {where} ({problem}): PostgreSQL store tests NOT RUN")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it again at the very end of the run, where nobody can miss it."""
    if _problem and _problem[0] and not _REQUIRED:
        terminalreporter.section("PostgreSQL tests skipped", sep="!", yellow=True, bold=True)
        terminalreporter.line(
            f"No usable PostgreSQL at {postgres_url()}: {_problem[0]}.\n"
            "The postgresql:// store was NOT tested. Start a server or set "
            "EVENTVAULT_TEST_POSTGRES_URL; CI sets EVENTVAULT_REQUIRE_POSTGRES=1 to make this an error.",
            yellow=True,
            bold=True,
        )


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


async def _eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within: float = 30.0, what: str = ""
) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await probe()
        if done(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(f"gave up after {within}s waiting for {what or probe}: last saw {result!r}")
        # A bounded poll of another process (the server), never a way to order our own tasks.
        await asyncio.sleep(0.02)


@pytest.fixture
def eventually():
    """Polls the database until a probe's result is done (``within`` seconds at most), or fails.

    Only for waiting on the server itself (a backend to block on a lock, the
    server to come back); the test's own tasks coordinate with asyncio events.
    """
    return _eventually


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
def schema(new_schema) -> str:
    """A schema of this test's own (dropped after it)."""
    return new_schema()


@pytest.fixture
def pg_url() -> str:
    """The test server's URL."""
    return postgres_url()


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
async def store(open_store) -> PostgresEventStore:
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
