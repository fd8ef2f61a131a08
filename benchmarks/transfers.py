"""``python -m benchmarks.transfers [--db URL] [--clients N] [--transfers N]``: transfers end to end.

Clients request transfers between funded accounts (each appends
``TransferRequested``) and wait for each to end (completed or failed) while a
``ProcessRunner`` runs the transfer process in the same process. Prints one
JSON line: transfers/s from first request to last end, and the p50/p99 of
request-to-end latency. The default store is a SQLite file (FULL) in a
temporary folder; a PostgreSQL URL should carry a ``?schema=`` of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from eventvault import Repository, open_store
from eventvault.processes import ProcessRunner
from eventvault_ledger.domain import Account
from eventvault_ledger.transfers import Transfer, Transfers


async def _until_ended(store: object, repo: Repository, transfer_id: str) -> None:
    while True:
        head = await store.head()  # type: ignore[attr-defined]
        if (await repo.load(Transfer, transfer_id)).ended:
            return
        await store.wait_for_events(head, timeout=1.0)  # type: ignore[attr-defined]


async def run(url: str, clients: int, transfers: int, accounts: int) -> dict[str, object]:
    """Run the workload on ``url``; the result line."""
    async with open_store(url) as store:
        repo = Repository(store)
        ids = []
        for i in range(accounts):
            account = Account.open(f"bench {i}", "EUR")
            account.deposit(Decimal(1_000_000))
            await repo.save(account)
            ids.append(account.id)
        latencies: list[float] = []

        async def client(n: int) -> None:
            rng = random.Random(n)  # noqa: S311 - a workload, not a secret
            for _ in range(transfers // clients):
                source, target = rng.sample(ids, 2)
                started = time.perf_counter()
                transfer = Transfer.request(source, target, Decimal(rng.randint(1, 10_000)).scaleb(-2), "EUR")
                await repo.save(transfer)
                await _until_ended(store, repo, transfer.id)
                latencies.append(time.perf_counter() - started)

        async with ProcessRunner(store, [Transfers()], idle_wait=0.2):
            began = time.perf_counter()
            await asyncio.gather(*(client(n) for n in range(clients)))
            elapsed = time.perf_counter() - began
        latencies.sort()
        return {
            "workload": "transfers end to end",
            "backend": store.scheme,
            "clients": clients,
            "transfers": len(latencies),
            "transfers_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        }


def main() -> None:
    """Parse the options, run, print the line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=None, help="a store URL (default: a new SQLite file)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--transfers", type=int, default=400)
    parser.add_argument("--accounts", type=int, default=50)
    args = parser.parse_args()
    url = args.db or f"sqlite:///{Path(tempfile.mkdtemp()) / 'transfers.db'}"
    print(json.dumps(asyncio.run(run(url, args.clients, args.transfers, args.accounts))))  # noqa: T201


if __name__ == "__main__":
    main()
