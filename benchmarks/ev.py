"""eventvault, used as its documentation shows: a Repository over a store opened by URL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from benchmarks.backends import Backend, Place
from benchmarks.model import REGISTRY, Deposited, EvAccount, Opened
from benchmarks.plan import Plan, Sizes, Stopwatch, Timing
from eventvault import EventStore, Repository, open_store
from eventvault.projections import Projection, ProjectionRunner, Session, handles, open_read_models
from eventvault.store.records import RecordedEvent

__all__ = ["EventVault", "balances_projection"]

T = TypeVar("T")


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())


def balances_projection(suffix: str, batch: int) -> Projection:
    """W6's read model: a balance row per account and a history row per deposit."""
    summary, history = f"bsum_{suffix}", f"bhist_{suffix}"
    insert_summary = (
        f"INSERT INTO {{{summary}}} (account_id, owner_name, currency, balance_cents, "  # noqa: S608 - our own table
        "deposits, version) VALUES (?, ?, ?, 0, 0, ?) ON CONFLICT (account_id) DO NOTHING"
    )
    update_summary = (
        f"UPDATE {{{summary}}} SET balance_cents = balance_cents + ?, "  # noqa: S608 - our own table
        "deposits = deposits + 1, version = ? WHERE account_id = ? AND version < ?"
    )
    insert_history = (
        f"INSERT INTO {{{history}}} (account_id, version, amount_cents, description, "  # noqa: S608 - our own table
        "position) VALUES (?, ?, ?, ?, ?)"
    )

    class Balances(Projection):
        name = f"bench_{suffix}"
        tables = (summary, history)
        schema = summary_schema(f"{{{summary}}}", f"{{{history}}}")
        batch_size = batch

        @handles(Opened)
        def _opened(self, db: Session, e: RecordedEvent) -> None:
            data: Opened = e.data
            db.execute(insert_summary, (e.stream_id, data.owner_name, data.currency, e.stream_version))

        @handles(Deposited)
        def _deposited(self, db: Session, e: RecordedEvent) -> None:
            data: Deposited = e.data
            cents = int(data.amount.scaleb(2))
            v = e.stream_version
            if db.execute(update_summary, (cents, v, e.stream_id, v)) == 1:
                db.execute(insert_history, (e.stream_id, v, cents, data.description, e.position))

    return Balances()


def summary_schema(summary: str, history: str) -> tuple[str, str]:
    """The DDL of W6's two tables (the limit creates the very same ones)."""
    return (
        (
            f"CREATE TABLE {summary} (account_id TEXT PRIMARY KEY, owner_name TEXT NOT NULL, "
            "currency TEXT NOT NULL, balance_cents BIGINT NOT NULL, deposits BIGINT NOT NULL, "
            "version BIGINT NOT NULL)"
        ),
        (
            f"CREATE TABLE {history} (account_id TEXT NOT NULL, version BIGINT NOT NULL, "
            "amount_cents BIGINT NOT NULL, description TEXT NOT NULL, position BIGINT NOT NULL, "
            "PRIMARY KEY (account_id, version))"
        ),
    )


class EventVault:
    """The eventvault contender."""

    name = "eventvault"

    def __init__(self, backend: Backend, sizes: Sizes) -> None:
        self.backend = backend
        self.sizes = sizes

    async def _open(self, place: Place, **options: object) -> EventStore:
        store = await open_store(self.backend.ev_url(place, **options), registry=REGISTRY)
        await store.head()  # connected before the clock starts, as the other contenders are
        return store

    def prepare(self, place: Place) -> None:
        """Create the store's schema in ``place`` (the limit writes into it)."""

        async def go() -> None:
            store = await self._open(place)
            await store.close()

        _run(go)

    # -- W1, W2: one writer ------------------------------------------------------------

    def write(self, place: Place, plan: Plan, *, per_event: bool) -> tuple[Timing, list[Any]]:
        """W1 (an append per event) or W2 (an append per account); returns the account ids too."""
        ids = [str(uuid.uuid4()) for _ in plan.accounts]

        async def go() -> Timing:
            store = await self._open(place)
            repo = Repository(store)
            watch = Stopwatch()
            try:
                with watch.running():
                    for aid, args, deposits in zip(ids, plan.accounts, plan.deposits, strict=True):
                        account = EvAccount.open(aid, args)
                        if per_event:
                            await repo.save(account)
                        for d in deposits:
                            account.deposit(d)
                            if per_event:
                                await repo.save(account)
                        if not per_event:
                            await repo.save(account)
            finally:
                await store.close()
            return watch.timing(plan.events)

        return _run(go), ids

    # -- W3: load each aggregate -------------------------------------------------------

    def load_each(self, place: Place, ids: list[Any]) -> tuple[Timing, Any]:
        """W3: load every account; returns the sum of balances as a check."""

        async def go() -> tuple[Timing, Any]:
            store = await self._open(place)
            repo = Repository(store)
            watch = Stopwatch()
            total: Any = 0
            try:
                with watch.running():
                    for aid in ids:
                        account = await repo.load(EvAccount, aid)
                        total += account.balance
            finally:
                await store.close()
            return watch.timing(len(ids)), total

        return _run(go)

    # -- W4: the whole log ---------------------------------------------------------------

    def read_log(self, place: Place) -> tuple[Timing, Any]:
        """W4: read and decode every event of the global log, a page at a time."""

        async def go() -> tuple[Timing, Any]:
            store = await self._open(place)
            watch = Stopwatch()
            n = 0
            try:
                with watch.running():
                    for _ in range(self.sizes.log_reads):
                        async for e in store.iter_all(batch=self.sizes.page):
                            e.data  # noqa: B018 - decoding is the work measured
                            n += 1
            finally:
                await store.close()
            return watch.timing(n), n

        return _run(go)

    # -- W5: one long stream ----------------------------------------------------------

    def build_long(self, place: Place, events: int) -> str:
        """Write one account of ``events`` events (in appends of 500) and snapshot it at the end."""
        aid = str(uuid.uuid4())
        from benchmarks.model import account_args, deposit_args  # noqa: PLC0415

        async def go() -> None:
            store = await self._open(place)
            repo = Repository(store)
            try:
                account = EvAccount.open(aid, account_args(0))
                for k in range(1, events):
                    account.deposit(deposit_args(0, k))
                    if k % 500 == 0:
                        await repo.save(account)
                await repo.save(account)
                await repo.snapshot(account)
            finally:
                await store.close()

        _run(go)
        return aid

    def load_long(self, place: Place, aid: str, loads: int, *, snapshot: bool) -> tuple[Timing, Any]:
        """W5: load the long account ``loads`` times, from its snapshot or from its events."""

        async def go() -> tuple[Timing, Any]:
            store = await self._open(place)
            repo = Repository(store, snapshot_every={EvAccount: 10_000_000 if snapshot else None})
            watch = Stopwatch()
            last: Any = None
            try:
                with watch.running():
                    for _ in range(loads):
                        last = await repo.load(EvAccount, aid)
            finally:
                await store.close()
            return watch.timing(loads), (last.version, last.balance)

        return _run(go)

    # -- W6: a projection catching up ----------------------------------------------------

    def project(self, place: Place, suffix: str, events: int) -> tuple[Timing, Any]:
        """W6: run a projection from the start of the log until it has caught up with the head.

        The clock runs from ``start()`` (which also creates the read-model tables, as
        the limit's clock includes creating its own) to the moment the checkpoint
        passes the head.
        """
        projection = balances_projection(suffix, self.sizes.projection_batch)

        async def go() -> tuple[Timing, Any]:
            store = await self._open(place)
            watch = Stopwatch()
            try:
                head = await store.head()
                runner = ProjectionRunner(
                    store,
                    [projection],
                    read_models=open_read_models(self.backend.ev_url(place)),
                    idle_wait=0.05,
                )
                try:
                    with watch.running():
                        await runner.start()
                        if not await runner.wait_for(head, timeout=3600):
                            raise RuntimeError("the projection did not catch up")
                    rows = await asyncio.to_thread(
                        runner.query,
                        f"SELECT count(*), sum(balance_cents) FROM bsum_{suffix}",  # noqa: S608 - our own name
                    )
                finally:
                    await runner.stop()
            finally:
                await store.close()
            return watch.timing(events), tuple(rows[0])

        return _run(go)

    # -- W7: concurrent writers -----------------------------------------------------------

    def concurrent(self, place: Place, plan: Plan) -> Timing:
        """W7: one task per account of ``plan``, all at once, an append per event."""
        ids = [str(uuid.uuid4()) for _ in plan.accounts]
        options: dict[str, object] = {}
        if self.backend.name == "postgresql":
            options = {"pool_min": len(ids), "pool_max": len(ids)}

        async def go() -> Timing:
            store = await self._open(place, **options)
            repo = Repository(store)
            start = asyncio.Event()

            async def writer(aid: str, i: int) -> None:
                await start.wait()
                account = EvAccount.open(aid, plan.accounts[i])
                await repo.save(account)
                for d in plan.deposits[i]:
                    account.deposit(d)
                    await repo.save(account)

            # Warm the pool first: the measurement is appends, not connecting.
            await asyncio.gather(*(store.stream_version(f"warm-{i}") for i in range(len(ids))))
            tasks = [asyncio.create_task(writer(aid, i)) for i, aid in enumerate(ids)]
            watch = Stopwatch()
            try:
                with watch.running():
                    start.set()
                    await asyncio.gather(*tasks)
            finally:
                await store.close()
            return watch.timing(plan.events)

        return _run(go)
