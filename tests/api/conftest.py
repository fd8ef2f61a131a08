"""HTTP API test setup: the app in-process, on SQLite (a temp file) and on PostgreSQL (a fresh schema).

Every test that takes ``api`` (or ``make_api``) runs once per backend. The
PostgreSQL runs use the run's own server (tests/conftest.py): without one they
are skipped, and with ``EVENTVAULT_REQUIRE_POSTGRES=1`` (CI) a missing server
fails them, as in tests/postgres. Helpers reach the tests as fixtures and as methods of
:class:`Api` (tests import nothing from here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql

from eventvault import Checkpoint
from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.services import Services
from eventvault_ledger.api.settings import Settings, Token
from eventvault_ledger.domain import Account

PROBLEM_BASE = "https://eventvault.dev/problems/"

# Secrets are at least 16 characters; each token's subject is what events record as the actor.
TOKENS = {
    "reader": Token("reader-token-0123456789", "reader", frozenset({"read"})),
    "writer": Token("writer-token-0123456789", "writer", frozenset({"read", "write"})),
    "admin": Token("admin-token-01234567890", "admin", frozenset({"read", "write", "admin"})),
    "write-only": Token("write-only-token-012345", "write-only", frozenset({"write"})),
}


# -- the PostgreSQL server: the run's own (tests/conftest.py) ------------------------------


def postgres_url() -> str:
    """The test server's URL (set by the ``postgres_server`` fixture)."""
    return os.environ["EVENTVAULT_TEST_POSTGRES_URL"]


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


def _drop_schema(name: str) -> None:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty store: a SQLite file of this test, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    request.getfixturevalue("postgres_server")  # skips, or fails in CI, without a server
    schema = f"evt_api_{uuid.uuid4().hex[:12]}"
    yield _with_schema(postgres_url(), schema)
    _drop_schema(schema)


# -- the app and a client -------------------------------------------------------------------


class Api:
    """A started app and an in-process client, with the few helpers most tests want."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    # -- plain HTTP --------------------------------------------------------------------

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.get(url, **kw)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.post(url, **kw)

    # -- commands --------------------------------------------------------------------------

    async def opened(self, owner: str = "Ada Lovelace", currency: str = "EUR", **kw: Any) -> dict[str, Any]:
        """Open an account; the answer (accountId, version, position, checkpoint)."""
        r = await self.post("/api/command/accounts", json={"ownerName": owner, "currency": currency}, **kw)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def open(self, owner: str = "Ada Lovelace", currency: str = "EUR", **kw: Any) -> str:
        """Open an account; its id."""
        return str((await self.opened(owner, currency, **kw))["accountId"])

    async def deposit(self, account_id: str, amount: Any, **kw: Any) -> httpx.Response:
        return await self.post(f"/api/command/accounts/{account_id}/deposit", json={"amount": amount}, **kw)

    async def withdraw(self, account_id: str, amount: Any, **kw: Any) -> httpx.Response:
        return await self.post(f"/api/command/accounts/{account_id}/withdraw", json={"amount": amount}, **kw)

    async def funded(self, amount: str = "100.00", currency: str = "EUR") -> str:
        """A new account holding ``amount``."""
        account_id = await self.open(currency=currency)
        r = await self.deposit(account_id, amount)
        assert r.status_code == 200, r.text
        return account_id

    async def account(self, account_id: str, position: int | str | None = None) -> dict[str, Any]:
        """The account's summary, once the read model has passed ``position`` (or a checkpoint)."""
        if position is not None:
            await self.settled(position)
        r = await self.get(f"/api/query/accounts/{account_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def settled(self, position: int | str) -> None:
        """Wait until the read models have passed ``position`` (a query across accounts waits for it)."""
        r = await self.get("/api/query/totals", params={"consistentWith": position})
        assert r.status_code == 200, r.text

    @staticmethod
    def latest(answers: list[httpx.Response]) -> str:
        """The checkpoint of the latest of these accepted commands (log order is not position order)."""
        accepted = [Checkpoint.parse(r.json()["checkpoint"]) for r in answers if r.status_code < 300]
        return str(max(accepted))

    # -- the log itself --------------------------------------------------------------------

    async def head(self) -> Checkpoint:
        """The head of the event log as readers see it (on PostgreSQL it may trail the last commits)."""
        return await self.services.store.head()

    async def log_size(self) -> int:
        """How many events the log holds, counted in the database itself.

        The head is no measure of "nothing was appended" on PostgreSQL: it trails
        commits until every older transaction has ended (see the store's docs).
        """
        store = self.services.store
        if store.scheme == "sqlite":
            with contextlib.closing(sqlite3.connect(str(store.path))) as conn:  # type: ignore[attr-defined]
                return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        async with await psycopg.AsyncConnection.connect(postgres_url()) as conn:
            query = sql.SQL("SELECT count(*) FROM {}.events").format(sql.Identifier(store.schema))  # type: ignore[attr-defined]
            row = await (await conn.execute(query)).fetchone()
            assert row is not None
            return int(row[0])

    async def version(self, account_id: str) -> int:
        """The account stream's version in the log (0: no such stream)."""
        return await self.services.store.stream_version(Account.stream_id_for(account_id))

    async def events(self, account_id: str) -> list[Any]:
        """The account's stored events."""
        return await self.services.store.read_stream(Account.stream_id_for(account_id))

    # -- assertions ------------------------------------------------------------------------

    @staticmethod
    def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
        """Assert ``response`` is a problem document of ``status`` and type ``code``; its body."""
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json", response.headers
        body = dict(response.json())
        assert body["type"] == PROBLEM_BASE + code, body
        assert body["status"] == status, body
        assert body["title"], body
        assert body["detail"], body
        return body


@pytest.fixture
async def make_api_for() -> AsyncIterator[Any]:
    """Starts apps on the store a URL names (``make_api_for(url, tokens=...)``), stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(db: str, *, tokens: tuple[str, ...] = (), **options: Any) -> Api:
            options.setdefault("sse_keepalive", 0.2)
            settings = Settings(db=db, tokens=tuple(TOKENS[t] for t in tokens), **options)
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            )
            return Api(app, client)

        yield make


@pytest.fixture
def make_api(db_url: str, make_api_for: Callable[..., Awaitable[Api]]) -> Callable[..., Awaitable[Api]]:
    """Starts apps on this test's store (``make_api(tokens=..., run_projections=...)``), stopped after it."""

    async def make(**options: Any) -> Api:
        return await make_api_for(db_url, **options)

    return make


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    """The app with projections running and no tokens (everyone may do everything)."""
    return await make_api()


@pytest.fixture
def tokens() -> dict[str, str]:
    """The bearer header of each test token: ``tokens["writer"]``."""
    return {name: f"Bearer {t.secret}" for name, t in TOKENS.items()}


@pytest.fixture
async def live(api: Api) -> AsyncIterator[str]:
    """``api``'s app served by uvicorn on a real socket; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: connections wait in the backlog, so no start-up race.
    sock.listen(64)
    config = uvicorn.Config(api.app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
