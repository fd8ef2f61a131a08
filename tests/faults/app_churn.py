"""Start and stop the ledger app over and over while its threads are busy (run by test_stop_races.py).

``python app_churn.py DIR ROUNDS`` starts the app's services on ``DIR/ledger.db``
``ROUNDS`` times. Each round runs, all at once: the idempotency sweep (a TTL so
short it sweeps without pause), the projection runner, queries, idempotency
claims and status reads on worker threads, commands, and in every other round
a stop of the runner in the middle of it all; then the services stop with
that work still in flight. Every tenth round goes through the whole HTTP app
instead. A connection closed under a statement running on another thread
crashes the process (SIGSEGV): the test runs this in a subprocess and wants exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Awaitable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from eventvault_ledger import queries
from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.services import Services
from eventvault_ledger.api.settings import Settings
from eventvault_ledger.domain import Account

WORK = 6  # of each kind, per round


def _settings(db: Path) -> Settings:
    return Settings(db=f"sqlite:///{db}", idempotency_ttl=1e-6, consistency_timeout=0.05)


async def _deposit(services: Services, account_id: str) -> None:
    account = await services.repository.load(Account, account_id)
    account.deposit(Decimal("1.00"))
    await services.repository.save(account)


async def _read_your_writes(services: Services) -> bool:
    return await services.runner.wait_for(await services.store.head(), timeout=0.05)


async def _services_round(db: Path, n: int) -> None:
    services = await Services.open(_settings(db))
    in_flight: list[asyncio.Task[Any]] = []
    try:
        account = Account.open("Ada", "EUR")
        await services.repository.save(account)
        account_id = str(account.id)
        work: list[Awaitable[Any]] = []
        for i in range(WORK):
            key = f"churn {n} {i} {uuid.uuid4().hex[:6]}"
            work += [
                asyncio.to_thread(queries.get_account, services.db, account_id),
                asyncio.to_thread(services.idempotency.claim, key, "fingerprint"),
                services.runner.status(),
                _read_your_writes(services),
                _deposit(services, account_id),
            ]
        in_flight = [asyncio.ensure_future(w) for w in work]
        await asyncio.sleep(0)  # let them reach their threads
        if n % 2:
            # The projection runner stops under the sweep and the readers.
            in_flight.append(asyncio.ensure_future(services.runner.stop()))
        await asyncio.sleep(0.001 * (n % 4))
    finally:
        await services.stop()
    # Stopped under them: the work in flight ends however it ends, but the process lives.
    for task in in_flight:
        with contextlib.suppress(Exception):
            await task


async def _http_round(db: Path, n: int) -> None:
    app = create_app(_settings(db))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
        in_flight: list[asyncio.Task[httpx.Response]] = []
        async with app.router.lifespan_context(app):
            # An owner per round: an owner may hold at most three open accounts per currency.
            r = await client.post("/api/command/accounts", json={"ownerName": f"Ada {n}", "currency": "EUR"})
            account_id = r.json()["accountId"]
            for i in range(WORK):
                in_flight.append(asyncio.create_task(client.get(f"/api/query/accounts/{account_id}")))
                in_flight.append(
                    asyncio.create_task(
                        client.post(
                            f"/api/command/accounts/{account_id}/deposit",
                            json={"amount": "1.00"},
                            headers={"Idempotency-Key": f"churn-{n}-{i}"},
                        )
                    )
                )
            await asyncio.sleep(0)
        for task in in_flight:
            with contextlib.suppress(Exception):
                await task


async def main(folder: Path, rounds: int) -> None:
    for n in range(rounds):
        if n % 10 == 9:
            await _http_round(folder / "ledger.db", n)
        else:
            await _services_round(folder / "ledger.db", n)
    print(f"{rounds} rounds")  # noqa: T201 - the test reads it


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
