"""kill -9 of the transfer worker, again and again, under concurrent transfer clients.

Eight clients request transfers (and deposit) while a worker process runs
the transfer process; the test kills the worker with SIGKILL ten times, each
time after it has ended more transfers (seen in the log, with a deadline),
restarting it under the same worker id. Then one last worker finishes the
work, and the log must show: money conserved, every transfer ended exactly
once, and no leg (debit, credit, refund, settle) recorded twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from eventvault import Repository, open_store
from eventvault_ledger.domain import (
    Account,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferRefunded,
    TransferSent,
    TransferSettled,
)
from eventvault_ledger.transfers import Transfer, TransferCompleted, TransferFailed

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("transfer_worker.py")
KILLS = 10
CLIENTS = 8
ACCOUNTS = 6
DEADLINE = 120.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh store: a SQLite file, or a schema of its own on the run's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    request.getfixturevalue("postgres_server")
    base = os.environ["EVENTVAULT_TEST_POSTGRES_URL"]
    schema = f"evt_crash_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(base)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    yield urlunsplit(parts._replace(query=query))
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def _start_worker(url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our interpreter, our script
        [sys.executable, str(WORKER), url, "transfer-worker"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), DEADLINE)
    assert line.strip() == "ready", line
    return proc


async def _reap(worker: subprocess.Popen[str]) -> None:
    await asyncio.to_thread(worker.wait)
    if worker.stdout is not None:
        worker.stdout.close()


async def _ended(store: Any) -> int:
    count = 0
    cursor = None
    while True:
        page = await store.read_all(cursor, limit=10_000, event_types=["TransferCompleted", "TransferFailed"])
        count += len(page.events)
        if page.checkpoint == cursor:
            return count
        cursor = page.checkpoint


async def _wait(check: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await check():
        assert loop.time() < end, f"{what} did not happen in time"
        await asyncio.sleep(0.02)


async def _clients(url: str, accounts: list[str], kills_done: asyncio.Event) -> int:
    """Each client keeps one transfer in flight until the kills are done, then requests one more.

    So the worker always has work while it is killed, and the last kill lands
    before every transfer has ended, however fast the machine.
    """

    async def client(n: int) -> int:
        rng = random.Random(n)
        made = 0
        async with open_store(url) as store:
            repo = Repository(store)
            while True:
                last = kills_done.is_set()
                source, target = rng.sample(accounts, 2)
                amount = Decimal(rng.randint(1, 40000)).scaleb(-2)
                transfer = Transfer.request(source, target, amount, "EUR")
                await repo.save(transfer)
                made += 1
                if rng.random() < 0.2:
                    funded = rng.choice(accounts[:ACCOUNTS])  # the last one is closed
                    await repo.update(Account, funded, lambda a: a.deposit(Decimal("10.00")))
                if last:
                    return made

                async def ended(tid: str = transfer.id) -> bool:
                    return (await repo.load(Transfer, tid)).ended

                await _wait(ended, f"the end of transfer {transfer.id}")

    return sum(await asyncio.gather(*(client(n) for n in range(CLIENTS))))


async def _check(store: Any, repo: Repository, accounts: list[str], transfers: int) -> None:
    flows, in_flight, ends, legs, requested = await _fold(store)
    balances = sum([(await repo.load(Account, a)).balance for a in accounts], Decimal(0))
    assert in_flight == 0
    assert balances == flows
    assert len(requested) == transfers
    assert all(ends[t] == 1 for t in requested), {t: ends[t] for t in requested if ends[t] != 1}
    shapes = {
        "completed": [{TransferSent, TransferReceived, TransferSettled}],
        "failed": [{TransferSent, TransferRefunded}, set()],
    }
    for t in requested:
        assert all(n == 1 for n in legs[t].values()), (t, legs[t])
        stage = (await repo.load(Transfer, t)).stage
        assert set(legs[t]) in shapes[stage], (t, stage, legs[t])


Legs = defaultdict[str, Counter[type]]


async def _fold(store: Any) -> tuple[Decimal, Decimal, Counter[str], Legs, set[str]]:  # noqa: C901 - one fold
    """Over the log: deposits - withdrawals, money in flight, each transfer's ends and legs, the transfers."""
    flows = in_flight = Decimal(0)
    ends: Counter[str] = Counter()
    legs: defaultdict[str, Counter[type]] = defaultdict(Counter)
    requested: set[str] = set()
    cursor = None
    while True:
        page = await store.read_all(cursor, limit=10_000)
        for e in page.events:
            d = e.data
            if isinstance(d, MoneyDeposited):
                flows += d.amount
            elif isinstance(d, MoneyWithdrawn):
                flows -= d.amount
            elif isinstance(d, TransferSent):
                in_flight += d.amount
            elif isinstance(d, TransferReceived | TransferRefunded):
                in_flight -= d.amount
            if isinstance(d, TransferSent | TransferReceived | TransferRefunded | TransferSettled):
                legs[d.transfer_id][type(d)] += 1
            if e.stream_id.startswith("transfer-"):
                tid = e.stream_id.removeprefix("transfer-")
                requested.add(tid)
                if isinstance(d, TransferCompleted | TransferFailed):
                    ends[tid] += 1
        if page.checkpoint == cursor:
            break
        cursor = page.checkpoint
    return flows, in_flight, ends, legs, requested


async def test_kill_9_the_transfer_worker_under_concurrent_clients(store_url: str) -> None:
    """Ten kills mid-work: conservation, every transfer ended exactly once, no leg twice."""
    async with open_store(store_url) as store:
        repo = Repository(store)
        accounts = []
        for i in range(ACCOUNTS):
            account = Account.open(f"owner {i}", "EUR")
            account.deposit(Decimal(1000))
            await repo.save(account)
            accounts.append(account.id)
        if ACCOUNTS:
            closing = Account.open("closes", "EUR")  # a target that is closed: credits refunded
            closing.close()
            await repo.save(closing)
            accounts.append(closing.id)

        worker = await _start_worker(store_url)
        kills_done = asyncio.Event()
        clients = asyncio.create_task(_clients(store_url, accounts, kills_done))
        kills = reached = 0
        try:
            while kills < KILLS:
                before = await _ended(store)

                async def progressed(before: int = before) -> bool:
                    return await _ended(store) > before or clients.done()

                await _wait(progressed, "progress of the worker")
                await asyncio.sleep(random.random() * 0.05)  # land anywhere in the next steps
                worker.send_signal(signal.SIGKILL)
                await _reap(worker)
                kills += 1
                reached = await _ended(store)
                worker = await _start_worker(store_url)
            kills_done.set()
            made = await clients

            async def all_ended() -> bool:
                return await _ended(store) >= made

            await _wait(all_ended, "the end of every transfer")
        finally:
            worker.send_signal(signal.SIGTERM)
            await _reap(worker)
            if not clients.done():
                clients.cancel()
        assert kills == KILLS
        assert reached < made, "the last kill should land before every transfer has ended"
        await _check(store, repo, accounts, made)


async def test_the_eventvault_worker_runs_transfers(tmp_path: Path) -> None:
    """`eventvault worker` runs the transfer process beside the projections: a requested transfer ends."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with open_store(url) as store:
        repo = Repository(store)
        ada = Account.open("Ada", "EUR")
        ada.deposit(Decimal(10))
        bob = Account.open("Bob", "EUR")
        await repo.save(ada)
        await repo.save(bob)
        transfer = Transfer.request(ada.id, bob.id, Decimal(4), "EUR")
        await repo.save(transfer)
        command = [str(Path(sys.executable).with_name("eventvault")), "worker", "--db", url]
        worker = subprocess.Popen(  # noqa: S603, ASYNC220 - our console script, fixed arguments
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:

            async def ended() -> bool:
                return (await repo.load(Transfer, transfer.id)).ended

            await _wait(ended, "the end of the transfer")
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait)
        assert (await repo.load(Transfer, transfer.id)).stage == "completed"
        assert (await repo.load(Account, bob.id)).balance == 4
