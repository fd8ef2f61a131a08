"""The ledger on a PostgreSQL server that crashes: durable refusals, fast 503s, a clean recovery.

The server is this test's own (``private_cluster``), stopped as a crash would
(``pg_ctl stop -m immediate``) right after an answer was sent.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from eventvault.testing import eventually_async
from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROUNDS = 20
WAIT = 60.0  # generous: the server restarts, the app reconnects


PATIENT_POOL = 120.0
"""A pool timeout no answer during an outage may wait for: it would show as a slow answer."""


@pytest.fixture(params=[None])
async def ledger(private_cluster, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The app (projections running) on the private server, and a client for it.

    ``request.param``, when given, is the store's pool timeout.
    """
    url = private_cluster.create_database("ledger")
    if request.param is not None:
        url += f"?pool_timeout={request.param:g}"
    app = create_app(Settings(db=url, consistency_timeout=10))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def _ready(client: httpx.AsyncClient) -> None:
    """Wait (bounded) until /readyz says the app can serve again."""
    # Polling another process (the server), not ordering our own tasks.
    await eventually_async(
        lambda: client.get("/readyz"),
        lambda r: r.status_code == 200,
        within=WAIT,
        what="the app ready again after the restart",
    )


async def _command(client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post(f"/api/command/accounts{path}", json=body, headers=headers)


def _refusal(body: dict[str, Any]) -> dict[str, Any]:
    """What a refusal says (not where or when it was answered)."""
    return {k: body[k] for k in ("type", "detail", "balance", "requested", "currency")}


async def test_a_refused_keyed_command_stays_refused_after_the_database_crashes(ledger, private_cluster):
    """20 rounds: a 422 for a keyed withdrawal, a crash at once, a deposit, the retry: still that 422."""
    for round_ in range(ROUNDS):
        opened = await _command(ledger, "", {"ownerName": f"Round {round_}", "currency": "EUR"})
        assert opened.status_code == 201, opened.text
        account = opened.json()["accountId"]
        assert (await _command(ledger, f"/{account}/deposit", {"amount": "10.00"})).status_code == 200
        key = str(uuid.uuid4())
        refused = await _command(ledger, f"/{account}/withdraw", {"amount": "100.00"}, key)
        assert refused.status_code == 422, refused.text

        await asyncio.to_thread(private_cluster.crash)
        await asyncio.to_thread(private_cluster.start)
        await _ready(ledger)

        # Back: the first command after the restart works (no dead pooled connection fails it) ...
        funded = await _command(ledger, f"/{account}/deposit", {"amount": "1000.00"})
        assert funded.status_code == 200, (round_, funded.text)
        # ... and the retry of the refused command gets the refusal it got, not a withdrawal.
        again = await _command(ledger, f"/{account}/withdraw", {"amount": "100.00"}, key)
        assert again.status_code == 422, (round_, again.text)
        assert _refusal(again.json()) == _refusal(refused.json()), round_
        summary = await ledger.get(f"/api/query/accounts/{account}")
        assert summary.json()["currentBalance"] == "1010.00"


@pytest.mark.parametrize("ledger", [PATIENT_POOL], indirect=True)
async def test_while_the_database_is_down_commands_and_readyz_answer_503_at_once(ledger, private_cluster):
    """During an outage: 503 (with Retry-After, without driver text) at once; after it, everything works.

    At once: without waiting for a pooled connection. The pool here would wait
    two minutes for one, so an answer that waited for it cannot pass as quick
    on any machine, however loaded; the figures printed show how quick.
    """
    opened = await _command(ledger, "", {"ownerName": "Ada", "currency": "EUR"})
    account = opened.json()["accountId"]
    await asyncio.to_thread(private_cluster.crash)
    try:
        timings = []
        for _ in range(5):
            for send in (
                lambda: _command(ledger, f"/{account}/deposit", {"amount": "1.00"}),
                lambda: ledger.get("/readyz"),
            ):
                started = time.monotonic()
                r = await send()
                timings.append(time.monotonic() - started)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"].isdigit()
                detail = r.json()["detail"]
                for leak in ("psycopg", "127.0.0.1", "schema", "connection", "PostgreSQL at"):
                    assert leak not in detail, detail
        # An answer that waited for the pool would take PATIENT_POOL seconds.
        assert max(timings) < PATIENT_POOL / 2, timings
    finally:
        await asyncio.to_thread(private_cluster.start)
    started = time.monotonic()
    await _ready(ledger)
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"\nfigures: 503 during the outage: median {statistics.median(timings):.2f} s, "
        f"max {max(timings):.2f} s over {len(timings)} requests; "
        f"ready {time.monotonic() - started:.2f} s after the server started"
    )
    statuses = [
        (await _command(ledger, f"/{account}/deposit", {"amount": "1.00"})).status_code for _ in range(5)
    ]
    assert statuses == [200] * 5
    summary = await ledger.get(f"/api/query/accounts/{account}")
    assert summary.json()["currentBalance"] == "5.00"
